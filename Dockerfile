# The worker image: `docker build -t streaming-worker .` (models baked in with
# --build-arg WITH_MODELS=1 after `make models`; or mount/download them, see the Helm chart).
# CPU torch by default; a GPU image passes e.g.
#   --build-arg TORCH_SPEC="torch==2.13.0" --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim AS base

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
ARG WITH_MODELS=0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"

COPY pyproject.toml README.md ./
COPY streaming ./streaming
COPY pipelines ./pipelines
COPY loadtests ./loadtests
COPY models ./models-src
RUN mkdir -p models && cp -r models-src/*.py models/ && mkdir -p models/fraud \
    && cp models-src/fraud/*.py models/fraud/ \
    && if [ "${WITH_MODELS}" = "1" ]; then cp -r models-src/fraud/v* models/fraud/; fi \
    && rm -rf models-src \
    && pip install . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin streaming

USER 10001
EXPOSE 9100
ENTRYPOINT ["streaming"]
CMD ["run", "-c", "/etc/streaming/pipeline.yaml", "--metrics-port", "9100"]
