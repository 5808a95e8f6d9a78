# syntax=docker/dockerfile:1
# Embedding service + trainer image. CPU PyTorch by default; for NVIDIA GPU hosts build with
#   docker build --build-arg TORCH_CHANNEL=cu126 \
#                --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 .
# (docker/compose.gpu.yml does exactly that). Both stages share BASE_IMAGE so the virtual
# environment built in the first one runs unchanged in the second.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# CUDA base images carry no Python; the slim Python image already has it. Versions come from
# the base image's distribution, which BASE_IMAGE pins.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_CHANNEL=cpu
WORKDIR /build
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# PyTorch first, from the channel that matches the hardware (cpu, cu126, ...): its own layer.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CHANNEL}"
# The remaining dependencies in a cached layer that only pyproject.toml invalidates:
# install the project once from empty packages, then again with the real sources.
# The postgres extra is the driver for postgresql+psycopg:// URLs (docker/compose.scale.yml).
COPY pyproject.toml README.md ./
RUN mkdir -p trainer service \
    && touch trainer/__init__.py service/__init__.py \
    && pip install "./[postgres]" \
    && pip uninstall -y embedding-service
COPY trainer ./trainer
COPY service ./service
RUN pip install --no-deps .

FROM base AS runtime
LABEL org.opencontainers.image.title="embedding-service" \
      org.opencontainers.image.description="Contrastive embedding trainer and FAISS-backed FastAPI service"
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
    && mkdir -p /data \
    && chown app:app /data
COPY --from=builder /opt/venv /opt/venv
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    EMBED_DATA_DIR=/data \
    EMBED_HOST=0.0.0.0 \
    EMBED_PORT=8000
USER 10001:10001
WORKDIR /home/app
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('EMBED_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["python", "-m", "service"]
