# syntax=docker/dockerfile:1
# The speech2face image: the pinned stack of pyproject.toml on Python 3.11, this checkout at
# /opt/speech2face (the Docker work pool of prefect.docker.yaml runs the flows from there).
#
#   docker build -t speech2face:cpu .                                          # CPU torch
#   docker build -t speech2face:cu128 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   # CUDA torch
#
# torch's version is pyproject.toml's pin (torch==2.13.0), written once: the build arg only
# chooses the wheel index, and its local build (2.13.0+cpu / +cu128) sorts above PyPI's plain
# 2.13.0, so pip takes it. The CUDA image needs the NVIDIA container toolkit on the host (the
# driver comes from the host; the CUDA runtime comes in the wheels). DALI (nvidia-dali-cuda120)
# is in both: on a CPU host it is only imported for `device=cpu` pipelines.
# Not built in the development sandbox (no Docker daemon there): see docs/orchestration.md.

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    S2F_DATA_DIR=/data \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=true \
    MLFLOW_ENABLE_TELEMETRY=false

# ffmpeg: yt-dlp merges downloaded streams with it (PyAV brings its own libraries);
# libgomp1: OpenMP for torch's CPU kernels and onnxruntime; tini: signals reach the flow run,
# so a cancelled or timed-out container stops instead of lingering.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libgomp1 tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/speech2face
# Dependencies first (a layer that survives code changes), then the code.
COPY pyproject.toml README.md ./
RUN mkdir -p s2f flows storage && touch s2f/__init__.py flows/__init__.py storage/__init__.py \
 && pip install --extra-index-url "${TORCH_INDEX_URL}" . \
 && pip uninstall -y speech2face
COPY s2f s2f
COPY flows flows
COPY storage storage
COPY prefect.yaml prefect.docker.yaml ./
RUN pip install --no-deps -e . \
 && useradd --create-home --uid 1000 s2f && mkdir -p /data && chown s2f /data

USER s2f
VOLUME ["/data"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["s2f", "--help"]
