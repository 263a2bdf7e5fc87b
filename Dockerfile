# The image the configs' environment.image names, with everything the trial needs baked in, for
# clusters whose agents have no internet or that want no pip at container start:
#   docker build -t <registry>/bert-glue:25.12 .
#   docker push <registry>/bert-glue:25.12
# then set environment.image: <registry>/bert-glue:25.12 in the configs. startup-hook.sh finds
# requirements-image.txt installed and only runs its version check.
# Another NVIDIA PyTorch release (say, one on CUDA 12 for V100 agents): --build-arg BASE_IMAGE=...
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.12-py3
FROM ${BASE_IMAGE}

# The hook's pins and the master's determined, in one resolve under the image's pins
# (/etc/pip/constraint.txt) relaxed only where they conflict (requests: determined needs < 2.32;
# transformers' own needs): bert_glue/container/image_pins.py, as startup-hook.sh installs them. Never torch, numpy
# or the nvidia-* CUDA libraries (tests/test_container_start.py runs these steps).
COPY requirements-image.txt bert_glue/container/image_pins.py /tmp/
RUN PIP_NO_CACHE_DIR=1 python3 /tmp/image_pins.py -r /tmp/requirements-image.txt determined==0.38.1

# Determined's task setup would pip install the master's determined wheel in every container;
# with this set it checks that `import determined` works instead. The master must be 0.38.1 too.
ENV DET_SKIP_PIP_INSTALL=1
