# The worker image: `docker build -t streaming-worker .`
# Models are baked in only with --build-arg WITH_MODELS=1 (after `make models`); otherwise the
# Helm chart mounts or downloads them (models.source: volume / objectStorage).
# CPU torch by default; a GPU image picks the CUDA build that matches its nodes' driver, e.g.
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG PYTHON_IMAGE=python:3.11-slim

# Model artifacts (models/<name>/<version>/) in a stage of their own, so that an image built
# without them carries none in any layer.
FROM ${PYTHON_IMAGE} AS models
ARG WITH_MODELS=0
COPY models /src/models
RUN mkdir -p /out/models \
    && if [ "${WITH_MODELS}" = "1" ]; then \
         cd /src/models \
         && { ls -d */v*/ >/dev/null 2>&1 \
              || { echo "WITH_MODELS=1 but no models/<name>/<version>/ built: run make models" >&2; \
                   exit 1; }; } \
         && for d in */v*/; do mkdir -p "/out/models/$d" && cp -r "$d". "/out/models/$d"; done; \
       fi

FROM ${PYTHON_IMAGE}
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from its own index: otherwise `pip install .` would pull a multi-GB CUDA build.
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY streaming ./streaming
COPY pipelines ./pipelines
COPY loadtests ./loadtests
# No dev extras. The sources are installed as packages; the folder is then dropped. gcc only
# for the install: it builds the C Avro reader, the state stage's C path, the explainer's
# integrated gradients and reason codes, and the prediction encoder (setup.py), which the build
# checks are there.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install . \
    && python -c "import streaming.formats._avro_flat, streaming.state._state_c" \
    && python -c "import streaming.explain._relu_ig, streaming.explain._top_codes" \
    && python -c "import streaming.engine._encode" \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /app \
    && cp -r pipelines /app/pipelines \
    && rm -rf /src \
    && groupadd --gid 10001 streaming \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin streaming

WORKDIR /app
COPY --from=models /out/models /app/models

USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["streaming"]
CMD ["run", "-c", "/etc/streaming/pipeline.yaml"]
