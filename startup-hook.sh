#!/usr/bin/env bash
# Determined sources this in every container of the experiment, after its task setup has
# installed the master's determined wheel and before the trial starts, inside environment.image
# (pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime: Python 3.12, torch; image/*.yaml). It installs
# what that image lacks, requirements-image.txt, without changing the image's torch, torchvision,
# triton, numpy or nvidia-* libraries, under any pip pins the image has (/etc/pip/constraint.txt)
# relaxed only where they conflict, and does not start pip when the installed distributions meet
# all of it already, dependencies included (an image built from the Dockerfile): image_pins.py.
# Then it stops the container with one "error:" line if torch or transformers cannot run the
# trial (versions.py).
set -euo pipefail
python="${DET_PYTHON_EXECUTABLE:-python3}"
"$python" -m bert_glue.container.image_pins -r requirements-image.txt --keep determined
"$python" -m bert_glue.container.versions
