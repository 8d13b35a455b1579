# The sandbox's demo service as a container image, for a real cluster (the opt-in kind test, or a trial cluster):
#   docker build -t canary-checks-demo -f docker/demo.Dockerfile .
# It serves the API, /healthz, /readyz and /metrics (Istio- and Linkerd-named series) on port 8080, as UID 1001 with a
# read-only root file system (the manifests mount /tmp).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY canary_checks ./canary_checks
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
USER 1001
ENV WORKLOAD=auth-canary NAMESPACE=orion VERSION=canary PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080
CMD ["sh", "-c", "exec python -m canary_checks.sandbox.demo --host 0.0.0.0 --port 8080 --workload \"$WORKLOAD\" --namespace \"$NAMESPACE\" --pod \"$HOSTNAME\" --version \"$VERSION\""]
