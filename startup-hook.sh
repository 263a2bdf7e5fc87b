#!/usr/bin/env bash
# Runs in every container of the experiment before the trial, inside Determined's PyTorch image
# (which has torch and determined). Installs what the trial needs beyond it, with the same pins
# as requirements.txt (tests/test_packaging.py keeps them in step).
set -euo pipefail
pip install --no-cache-dir \
  transformers==5.24.0 \
  tokenizers==0.23.3 \
  scikit-learn==1.9.1 \
  scipy==1.17.1 \
  sentencepiece==0.2.3 \
  sacremoses==0.2.0 \
  "requests>=2.28"
