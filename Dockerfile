# The serving container for Vertex AI (upload with invokeRoutePrefix "/*"); see README's
# "Container image". CPU by default; for NVIDIA GPUs build with an index whose torch of the pinned
# release is a CUDA build, e.g. PyPI's (torch 2.14.1 there is the CUDA 13.0 build):
#   --build-arg TORCH_INDEX_URL=https://pypi.org/simple
# PyTorch's CUDA wheels carry the CUDA runtime, so the same Python base serves both; the node
# supplies only the driver. BASE_IMAGE must provide Python 3.11 as `python` with pip.
#
# Layers, what changes least first: the user; torch/torchvision; the server's dependencies
# (pyproject.toml); EXTRAS and the project itself; SERVE_MODELS. Versions come from
# .ci/constraints.txt, the pins the tests run with. The sources are bind-mounted for the install,
# never copied into a layer.
#
# pip's configuration for the build only (none of it stays in the image), without editing this
# file: the build args PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and PIP_TRUSTED_HOST, and the secret
# pip_ca, a CA bundle for the index (e.g. a proxy's): --secret id=pip_ca,src=/path/to/ca.pem
ARG BASE_IMAGE=python:3.11-slim

# The sources and the pins, in a stage of their own: the image gets the pins and a digest of the
# sources (COPY --from is content-addressed, so a layer reruns exactly when what it reads
# changed; a bind mount alone does not invalidate podman's cache), and installs the sources
# through a bind mount, so they lie in no layer of the image.
FROM ${BASE_IMAGE} AS src
COPY .ci/constraints.txt /pins/all.txt
COPY pyproject.toml README.md LICENSE /src/
COPY app /src/app
COPY client /src/client
RUN cd /pins \
    && grep -E '^(torch|torchvision)==' all.txt > torch.txt \
    && sed '/^# --- the tests only/,$d' all.txt > constraints.txt \
    && python -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['server']))" > server.txt \
    && find /src -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum > sources.sha256

FROM ${BASE_IMAGE}
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
ENV MALLOC_ARENA_MAX=2 \
    SERVE_CACHE_DIR=/srv/models \
    YOLO_CONFIG_DIR=/srv/ultralytics \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib
RUN useradd --create-home --uid 1000 serve \
    && mkdir -p /srv/models /srv/ultralytics \
    && chown serve:serve /srv/models /srv/ultralytics

ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch/torchvision first, from PyTorch's own index (no CUDA wheels in the CPU image); pip then
# keeps them when it resolves ultralytics.
COPY --from=src /pins/torch.txt /opt/vertex-yolo/torch-constraints.txt
RUN --mount=type=secret,id=pip_ca \
    { [ ! -f /run/secrets/pip_ca ] || export PIP_CERT=/run/secrets/pip_ca; } \
    && pip install -c /opt/vertex-yolo/torch-constraints.txt --index-url "${TORCH_INDEX_URL}" torch torchvision

# The server's dependencies (pyproject.toml's, and its server extra's), before the project.
COPY --from=src /pins/constraints.txt /pins/server.txt /opt/vertex-yolo/
RUN --mount=type=secret,id=pip_ca \
    { [ ! -f /run/secrets/pip_ca ] || export PIP_CERT=/run/secrets/pip_ca; } \
    && pip install -c /opt/vertex-yolo/constraints.txt -r /opt/vertex-yolo/server.txt

# The package extras to install: "server,export" adds ONNX Runtime and OpenVINO for exported models.
ARG EXTRAS=server
COPY --from=src /pins/sources.sha256 /opt/vertex-yolo/
RUN --mount=type=secret,id=pip_ca --mount=type=bind,from=src,source=/src,target=/src,rw \
    { [ ! -f /run/secrets/pip_ca ] || export PIP_CERT=/run/secrets/pip_ca; } \
    && pip install -c /opt/vertex-yolo/constraints.txt "/src[${EXTRAS}]" \
    && pip check

# Weights to bake in, e.g. "yolo11n=yolo11n.pt,yolo11n-seg=yolo11n-seg.pt" (downloaded at build
# time into SERVE_CACHE_DIR). Empty: the bundled demo models, or every *.pt under
# AIP_STORAGE_URI when Vertex sets it (the model's artifact_uri).
ARG SERVE_MODELS=
ENV SERVE_MODELS=${SERVE_MODELS}
USER serve
WORKDIR /srv
# Load every configured model once: baked weights land in SERVE_CACHE_DIR, and a model that does
# not load fails the build.
RUN python -m app --prefetch

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["python", "-m", "app", "--healthcheck"]
CMD ["python", "-m", "app"]
