# The operator image the Helm chart runs (`geo run`), for users with a container engine:
#   docker build -t ghcr.io/geo-ai/geo-operator:0.1.0 .
# `make image` builds the same image without one (image/build-image.sh: Debian bookworm's
# python3 3.11, a venv at /opt/geo, uid 65532), and that is the image CI builds and runs.
# e2e/test_image_e2e.py checks that this file and the built image agree on the user,
# entrypoint, cmd, environment, exposed ports and labels: change both together.
FROM python:3.11-slim-bookworm
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/geo \
    && /opt/geo/bin/pip install --no-cache-dir . \
    && /opt/geo/bin/pip uninstall --quiet -y pip setuptools \
    && rm -rf /src \
    && echo "geo:x:65532:65532:geo operator:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
    && echo "geo:x:65532:" >> /etc/group
WORKDIR /
ENV PATH=/opt/geo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
LABEL org.opencontainers.image.title="geo-operator" \
      org.opencontainers.image.source="https://github.com/geo-ai/geo-operator" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="A Kubernetes operator that serves models with NVIDIA Triton: picks the quantized artifact, tunes batching, autoscales on QPS and p99."
# 8080: kopf's liveness endpoint (/healthz); 9090: the operator's own Prometheus metrics.
EXPOSE 8080/tcp 9090/tcp
# Matches the chart's podSecurityContext (runAsNonRoot, runAsUser 65532).
USER 65532:65532
ENTRYPOINT ["/opt/geo/bin/geo"]
CMD ["run"]
