# MedLN: the same app as `medln app` (and app.py, the Space), on port 7860, as a non-root user with uid 1000 (the
# Hugging Face Docker Spaces convention). Runs offline on the bundled medln-tiny backbone and
# sample data; with network (and HF_TOKEN for gated models) it runs the registry backbones.
#
#   docker build -t medln .
#   docker run --rm -p 7860:7860 medln                    # CPU
#   docker run --rm --gpus all -p 7860:7860 medln         # GPU (needs the NVIDIA container toolkit)
#
# torch from PyPI is the CUDA build (it runs on a CPU too). For a smaller CPU-only image:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t medln:cpu .
FROM python:3.11-slim-bookworm

# METEOR is scored by the COCO caption scorer's Java METEOR 1.5 (shipped in pycocoevalcap):
# it needs a Java runtime. Nothing else outside Python is needed at run time. Not pinned (DL3008):
# bookworm's security updates replace the package version, and a pinned one leaves the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends default-jre-headless \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

ARG TORCH_INDEX_URL=""
COPY requirements.txt /tmp/requirements.txt
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==$(sed -n 's/^torch==//p' /tmp/requirements.txt)" --index-url "$TORCH_INDEX_URL"; \
    fi \
    && pip install -r /tmp/requirements.txt

# The package itself (its dependencies are the lock installed above, so --no-deps): the image
# has the `medln` command, and the app runs from site-packages like any installed copy.
COPY pyproject.toml LICENSE /tmp/medln/
COPY docs/pypi.md /tmp/medln/docs/pypi.md
COPY medln /tmp/medln/medln
COPY assets /tmp/medln/assets
RUN pip install --no-deps /tmp/medln && rm -rf /tmp/medln

RUN useradd --create-home --uid 1000 user
USER 1000
ENV HOME=/home/user \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    MEDLN_RUNS=/home/user/app/runs/ui \
    MEDLN_CACHE=/home/user/.cache/medln \
    HF_HOME=/home/user/.cache/huggingface
WORKDIR /home/user/app

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]
CMD ["medln", "app"]
