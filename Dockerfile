# The operator image the Helm chart runs (`geo run`). Not built by CI: the
# build machines have no container engine. Build it with
#   docker build -t ghcr.io/geo-ai/geo-operator:0.1.0 .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /src
# Matches the chart's podSecurityContext (runAsNonRoot, runAsUser 65532).
USER 65532:65532
ENTRYPOINT ["geo"]
CMD ["run"]
