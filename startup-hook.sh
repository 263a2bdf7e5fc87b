#!/usr/bin/env bash
# Determined sources this in every container of the experiment, after its task setup has
# installed the master's determined wheel and before the trial starts, inside environment.image
# (nvcr.io/nvidia/pytorch:25.12-py3: Python 3.12, torch; image/ngc-25.12.txt). It installs what
# that image lacks, requirements-image.txt, under the image's own pip pins (/etc/pip/constraint.txt)
# relaxed only where they conflict with it or with the installed determined (image_pins.py; the
# configs empty PIP_CONSTRAINT so that the task setup's install of determined can run), and does
# nothing when all of it is there already (an image built from the Dockerfile). Then it stops the
# container with one "error:" line if torch or transformers cannot run the trial (versions.py).
set -euo pipefail
python="${DET_PYTHON_EXECUTABLE:-python3}"
if ! "$python" -m bert_glue.container.versions --unmet requirements-image.txt; then
  "$python" -m bert_glue.container.image_pins -r requirements-image.txt --keep determined
fi
"$python" -m bert_glue.container.versions
