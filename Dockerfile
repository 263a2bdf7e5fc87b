# The image the configs' environment.image names, with everything the trial needs baked in, for
# clusters whose agents have no internet or that want no pip at container start:
#   docker build -t <registry>/bert-glue:2.10.0-cuda12.8 .
#   docker push <registry>/bert-glue:2.10.0-cuda12.8
# then set environment.image: <registry>/bert-glue:2.10.0-cuda12.8 in the configs. startup-hook.sh
# finds requirements-image.txt installed and only runs its version check.
# Agents without internet need it (or another image they have) in the master's config as well, as
# task_container_defaults.image.cpu and .cuda: the master runs checkpoint GC in that image, never in
# the experiment's, and else in determinedai/pytorch-ngc:0.38.1, which such agents cannot pull
# (docs/cluster.md, "Deleting checkpoints on agents without internet").
ARG BASE_IMAGE=pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

# The base image's Python is Ubuntu's, whose pip refuses to install (PEP 668) unless told; the
# install below and any in a container (the task setup's, the hook's) install beside the image's.
ENV PIP_BREAK_SYSTEM_PACKAGES=1

# The hook's pins and the master's determined, in one resolve that never changes the image's
# torch, torchvision, triton, numpy or nvidia-* CUDA libraries, under any pins the image has
# (/etc/pip/constraint.txt) relaxed only where they conflict: bert_glue/container/image_pins.py,
# as startup-hook.sh installs them (tests/test_container_start.py runs these steps).
COPY requirements-image.txt bert_glue/container/image_pins.py /tmp/
RUN PIP_NO_CACHE_DIR=1 python3 /tmp/image_pins.py -r /tmp/requirements-image.txt determined==0.38.1

# Determined's task setup would pip install the master's determined wheel in every container;
# with this set it checks that `import determined` works instead. The master must be 0.38.1 too.
ENV DET_SKIP_PIP_INSTALL=1
