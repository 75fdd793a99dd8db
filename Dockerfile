# ragline: the HTTP API and web UI, with the bundled embedding model baked in.
# Build:  docker build -t ragline --build-arg EXTRAS=postgres .
# Not built on the machine this file was written on (no container runtime there): docs/deploy.md.

# ---- build stage: a virtual environment with ragline and its dependencies ----------------------
FROM python:3.11-slim AS build
ARG EXTRAS=postgres
# torch is pinned and installed first, as in the Makefile (an unpinned torch pulls a CUDA build);
# pass your CPU wheel index, e.g. --build-arg TORCH_INDEX="--index-url <your CPU wheel index>"
ARG TORCH_INDEX=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/ragline
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/ragline/bin/pip install $TORCH_INDEX torch==2.13.0 \
 && /opt/ragline/bin/pip install ".[${EXTRAS}]" \
 && /opt/ragline/bin/python -c "from ragline.embed.local import bundled_model_path; assert bundled_model_path().is_dir()"

# ---- runtime stage: the environment only, as a non-root user ------------------------------------
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home ragline
COPY --from=build /opt/ragline /opt/ragline
ENV PATH=/opt/ragline/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    RAGLINE_HOME=/data
USER ragline
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8321
# /healthz: the process is alive; /readyz (for a load balancer): the model is loaded
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8321/healthz', timeout=4).status == 200 else 1)"
CMD ["ragline", "serve", "--host", "0.0.0.0", "--port", "8321"]
