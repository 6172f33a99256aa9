# syntax=docker/dockerfile:1
# codeQ image: `codeq gateway` by default, `codeq deliver` for the deliverers (helm/codeq runs
# both). Build with BuildKit (the default): docker build -t codeq:0.1.0 .

# -- build: wheels for codeQ and every dependency (anything that compiles does it here) ------
# The server extra only: no embedded store (fakeredis, lupa), no local receiver (aiohttp).
FROM python:3.12.8-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY codeq ./codeq
COPY gateway ./gateway
COPY deliverers ./deliverers
RUN pip wheel --wheel-dir /wheels ".[server]"

# -- runtime: the wheels installed, no build tools, a non-root user -------------------------
FROM python:3.12.8-slim-bookworm AS runtime
# The version built above (codeq/__init__.py); the install is pinned to it.
ARG CODEQ_VERSION=0.1.0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 LOG_FORMAT=json
RUN groupadd --system --gid 10001 codeq \
 && useradd --system --uid 10001 --gid codeq --no-create-home --home-dir /nonexistent codeq \
 && mkdir -p /var/lib/codeq/artifacts \
 && chown codeq:codeq /var/lib/codeq/artifacts
# Bind-mounted from the build stage, so the wheels never become a layer of this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "codeq-tasks[server]==${CODEQ_VERSION}"
WORKDIR /var/lib/codeq
USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: `codeq deliver` serves no HTTP, and Kubernetes uses the chart's probes
# (/healthz, /readyz) instead.
ENTRYPOINT ["codeq"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "8080"]
