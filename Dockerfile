# plugformer serve, CPU image. The CUDA variant is deploy/docker/Dockerfile.cuda; docs/deployment.md explains both.
#
#   docker build -t plugformer-serve:cpu .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/x/checkpoints/last:/models/model:ro" plugformer-serve:cpu
#
# Extra arguments after the image name are appended as more server settings (any key but the three the
# entrypoint sets: plugformer serve rejects a repeated key), e.g.
#   docker run ... plugformer-serve:cpu server.api_key=$KEY server.max_batch=32
# The image holds no model: mount a checkpoint directory at /models/model. Nothing is downloaded at run time.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The CPU torch wheel first, from its own index, so that `.[serve]` finds torch satisfied and does not pull the
# (much larger) CUDA build from PyPI.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/plugformer
COPY pyproject.toml setup.py README.md ./
COPY core ./core
COPY plugins ./plugins
COPY conf ./conf
RUN pip install ".[serve]"

# A fixed numeric uid/gid so that Kubernetes' runAsNonRoot can verify it (deploy/kubernetes/deployment.yaml).
RUN groupadd --system --gid 10001 plugformer \
    && useradd --system --uid 10001 --gid plugformer --create-home --home-dir /home/plugformer plugformer \
    && mkdir -p /models/model \
    && chown plugformer:plugformer /models/model

# Runtime state (the token cache) in a writable place; never reach for a model hub.
ENV PLUGFORMER_CACHE=/tmp/plugformer-cache \
    HF_HUB_OFFLINE=1

USER 10001:10001
VOLUME ["/models/model"]
EXPOSE 8000

# Liveness: /health answers as soon as the process serves HTTP (readiness, /ready, is for the load balancer).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

ENTRYPOINT ["plugformer", "serve", "checkpoint=/models/model", "server.host=0.0.0.0", "server.port=8000"]
CMD []
