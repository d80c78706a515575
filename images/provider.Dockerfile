# The reference provider (behaves like upstream's e2e provider). Non-root by default: it only needs
# write access to the provider socket directory it is given (a hostPath owned by root needs runAsUser: 0).
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
# Reproducible builds: pass SOURCE_DATE_EPOCH (wheel timestamps, hash-checked .pyc files).
ARG SOURCE_DATE_EPOCH
WORKDIR /src
# Only the provider's part and the protocol layer (README "Packaging"): no Kubernetes client, no driver.
COPY constraints.txt ./
COPY proto proto
COPY provider provider
RUN pip wheel --no-cache-dir -c constraints.txt -w /wheels ./proto ./provider

FROM ${PYTHON_IMAGE}
# Reproducible builds: pass SOURCE_DATE_EPOCH (wheel timestamps, hash-checked .pyc files).
ARG SOURCE_DATE_EPOCH
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="secrets-store-csi-py e2e provider" \
      org.opencontainers.image.version="${VERSION}"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=wheels /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels secrets-store-csi-py-provider && rm -rf /wheels
USER 65532:65532
ENTRYPOINT ["secrets-store-csi-e2e-provider"]
