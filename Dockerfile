# Container image of scene7-exporter.
#
# Two stages: "build" turns the project and every dependency into wheels, the final stage
# installs only those wheels (no index, no compiler, no pip cache) and runs as uid 10001.
# BASE can point at a local stand-in for python:3.11-slim (see .ci/base-image).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter/ exporter/
# The cache mount keeps downloaded wheels between builds without putting them in a layer.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --disable-pip-version-check --wheel-dir /wheels . \
 && sha256sum /wheels/*.whl > /wheels.sha256

FROM ${BASE}
# Keep in step with [project].version in pyproject.toml (tests/test_deploy.py checks it).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="scene7-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the job progress of Adobe Scene7 IPS accounts" \
      org.opencontainers.image.source="https://github.com/scene7-exporter/scene7-exporter" \
      org.opencontainers.image.url="https://github.com/scene7-exporter/scene7-exporter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A record of the wheels the image is made of. Copying it also ties the cache of the next
# step to them: buildah does not look into bind-mounted stages when it reuses a layer.
COPY --from=build /wheels.sha256 /usr/local/share/scene7-exporter/wheels.sha256
# The wheels are bind-mounted from the build stage, so none of them stays in the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --disable-pip-version-check --no-cache-dir --no-index --find-links=/wheels \
        /wheels/scene7_exporter-*.whl \
 && groupadd --gid 10001 scene7 \
 && useradd --no-log-init --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin scene7 \
 && mkdir -p /etc/scene7-exporter
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 10373
# Asks /healthz as `run` serves it with the mounted configuration: its address, route prefix,
# TLS and basic auth (without one, the defaults: as `demo` runs).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["scene7-exporter", "healthcheck", "--config.file=/etc/scene7-exporter/config.yml"]
# The commit and the build time, last so that a new value rebuilds no layer above:
#   --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ARG REVISION=unknown
ARG CREATED=
LABEL org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
ENTRYPOINT ["scene7-exporter"]
# Mount the configuration file at this path (or pass another --config.file).
CMD ["run", "--config.file=/etc/scene7-exporter/config.yml"]
