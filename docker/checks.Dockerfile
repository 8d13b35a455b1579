# The checks as a container image, so they run inside the cluster (Argo Rollouts' Job, canary-checks serve, a CI
# runner pod):
#   docker build -t ghcr.io/orion/canary-checks:0.1.0 -f docker/checks.Dockerfile .
#   docker run --rm -v "$PWD/canary.yaml:/config/canary.yaml:ro" ghcr.io/orion/canary-checks:0.1.0 \
#       pytest suites/gate --stage 25
# It holds the package (pytest and the plugin come with it) and suites/; the config is read from CANARY_CONFIG
# (manifests/checks and manifests/argo mount the canary-checks-config ConfigMap there). Runs as UID 1001 with a
# read-only root file system: everything it writes (reports, evidence, matplotlib's cache) goes under /tmp.
FROM python:3.11-slim
WORKDIR /checks
COPY pyproject.toml README.md ./
COPY canary_checks ./canary_checks
RUN pip install --no-cache-dir . && rm -rf build
COPY suites ./suites
USER 1001
ENV CANARY_CONFIG=/config/canary.yaml \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080
CMD ["canary-checks", "serve", "--host", "0.0.0.0", "--port", "8080"]
