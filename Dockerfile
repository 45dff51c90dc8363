# The serving container for Vertex AI (upload with invokeRoutePrefix "/*"); see README's
# "Container image". CPU by default. For NVIDIA GPUs build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
# PyTorch's CUDA wheels carry the CUDA runtime, so the same Python base serves both; the node
# supplies only the driver. BASE_IMAGE must provide Python 3.11 as `python` with pip.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The package extras to install: "server,export" adds ONNX Runtime and OpenVINO for exported models.
ARG EXTRAS=server
# Weights to bake in, e.g. "yolo11n=yolo11n.pt,yolo11n-seg=yolo11n-seg.pt" (downloaded at build
# time into SERVE_CACHE_DIR). Empty: the bundled demo models, or every *.pt under
# AIP_STORAGE_URI when Vertex sets it (the model's artifact_uri).
ARG SERVE_MODELS=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# The server sets YOLO_OFFLINE=1 and YOLO_AUTOINSTALL=false itself (app/offline.py); its
# Ultralytics settings and fonts live in a directory the unprivileged user owns. GKE-based
# nodes mount the NVIDIA driver's libraries under /usr/local/nvidia.
# MALLOC_ARENA_MAX: glibc's per-thread malloc arenas otherwise grow resident memory under
# concurrent load (tests/bench/soak.py measured +6.4 % in 60 s without, +2.3 % with).
ENV SERVE_MODELS=${SERVE_MODELS} \
    MALLOC_ARENA_MAX=2 \
    SERVE_CACHE_DIR=/srv/models \
    YOLO_CONFIG_DIR=/srv/ultralytics \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib

# torch/torchvision first, from PyTorch's own index (no CUDA wheels in the CPU image); pip then
# keeps them when it resolves ultralytics.
RUN pip install --index-url "${TORCH_INDEX_URL}" torch torchvision

WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY client ./client
COPY app ./app
RUN pip install ".[${EXTRAS}]" \
    && rm -rf /build \
    && useradd --create-home --uid 1000 serve \
    && mkdir -p /srv/models /srv/ultralytics \
    && chown serve:serve /srv/models /srv/ultralytics

USER serve
WORKDIR /srv
# Load every configured model once: baked weights land in SERVE_CACHE_DIR, and a model that does
# not load fails the build.
RUN python -m app --prefetch

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["python", "-m", "app", "--healthcheck"]
CMD ["python", "-m", "app"]
