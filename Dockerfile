# codeQ image: `codeq gateway` by default; `codeq deliver` for the deliverers (see helm/codeq).
# Build: docker build -t codeq:0.1.0 .

# -- build: wheels for codeQ and its dependencies (compilers live only here) --------------
FROM python:3.12.8-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY codeq ./codeq
COPY gateway ./gateway
COPY deliverers ./deliverers
RUN pip wheel --wheel-dir /wheels ".[tracing]"

# -- runtime: the wheels installed, no build tools, a non-root user ----------------------
FROM python:3.12.8-slim-bookworm
# The version built above (pyproject.toml); the install is pinned to it.
ARG CODEQ_VERSION=0.1.0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 LOG_FORMAT=json
RUN groupadd --system --gid 10001 codeq \
 && useradd --system --uid 10001 --gid codeq --no-create-home --home-dir /nonexistent codeq \
 && mkdir -p /var/lib/codeq/artifacts \
 && chown codeq:codeq /var/lib/codeq/artifacts
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels "codeq[tracing]==${CODEQ_VERSION}" && rm -rf /wheels
WORKDIR /var/lib/codeq
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["codeq"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "8080"]
