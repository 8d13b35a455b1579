# syntax=docker/dockerfile:1
# The checks as a container image: the canary-checks package installed with pip (pytest, the plugin and the packaged
# gate and smoke suites come with it). Nothing is copied from a source tree, so build it from any directory, with
# BuildKit (Docker's default builder since 23.0):
#
#   From PyPI, a pinned release (any pip requirement works: "canary-checks @ git+https://HOST/canary-checks@v0.1.0"):
#     docker build -t registry.example/canary-checks:0.1.0 \
#         --build-arg CANARY_CHECKS_SPEC=canary-checks==0.1.0 -f checks.Dockerfile .
#   From a wheel you built (`python -m build --wheel` in a canary-checks checkout writes dist/):
#     docker build -t registry.example/canary-checks:0.1.0 --build-context wheels=dist \
#         --build-arg CANARY_CHECKS_SPEC=/wheels/canary_checks-0.1.0-py3-none-any.whl -f checks.Dockerfile .
#
# It runs as UID 1001, GID 1001 (user `checks`), never root. HOME is /tmp, so caches (pip, matplotlib, fontconfig)
# go under /tmp and any other UID works as well: with your workspace mounted, run it as yourself so what it writes
# is yours:
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/work" -w /work -e PROMETHEUS_TOKEN \
#       registry.example/canary-checks:0.1.0 pytest suites/gate --stage 25 --junitxml reports/gates.xml
# In the workspace it writes only reports/ (and .canary-checks/, the comparisons' evidence, unless
# --canary-evidence /tmp/evidence.json): no .pytest_cache, no __pycache__. Without --user the workspace must be
# writable by UID 1001.
#
# In Kubernetes (manifests/checks and manifests/argo; `canary-checks manifests render` sets the image from
# checks_image) it runs with a read-only root file system and an emptyDir on /tmp; those Pods set CANARY_CONFIG to
# the mounted canary-checks-config ConfigMap. Its working directory /checks has no suites/ of its own, so
# `canary-checks serve` and `canary-checks gates` run the packaged ones (mount a team's suites/ there to run those).

# The default is empty: `--build-context wheels=DIR` replaces it with the folder holding your wheel.
FROM scratch AS wheels

FROM python:3.11-slim
ARG CANARY_CHECKS_SPEC=canary-checks
ENV HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTEST_ADDOPTS="-p no:cacheprovider"
# The import fails the build when the installed release has no packaged suites (canary_checks.suites).
RUN --mount=type=bind,from=wheels,target=/wheels \
    pip install "${CANARY_CHECKS_SPEC}" \
    && python -c 'import canary_checks.suites.gate, canary_checks.suites.smoke' \
    && mkdir /checks \
    && groupadd --gid 1001 checks \
    && useradd --uid 1001 --gid 1001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin checks
WORKDIR /checks
USER 1001:1001
EXPOSE 8080
CMD ["canary-checks", "serve", "--host", "0.0.0.0", "--port", "8080", "--reports", "/tmp/reports"]
