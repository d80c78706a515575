# The operator image: non-root, read-only root filesystem friendly (no writes outside /tmp).
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
# Reproducible builds: pass SOURCE_DATE_EPOCH (wheel timestamps, hash-checked .pyc files).
ARG SOURCE_DATE_EPOCH
WORKDIR /src
# Only the operator's part and the layer it depends on (README "Packaging"): no gRPC, no driver.
COPY constraints.txt ./
COPY kube kube
COPY operator operator
RUN pip wheel --no-cache-dir -c constraints.txt -w /wheels ./kube ./operator

FROM ${PYTHON_IMAGE}
# Reproducible builds: pass SOURCE_DATE_EPOCH (wheel timestamps, hash-checked .pyc files).
ARG SOURCE_DATE_EPOCH
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="secrets-store-csi-py operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV SSCSI_VERSION=${VERSION} PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=wheels /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels secrets-store-csi-py-operator \
 && rm -rf /wheels
# kopf looks its user up (getpwuid); give the non-root uid a passwd/group entry.
RUN echo 'sscsi-operator:x:65532:65532:secrets-store-csi-py operator:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'sscsi-operator:x:65532:' >> /etc/group
COPY assets /usr/share/secrets-store-csi-py/assets
ENV SSCSI_ASSETS_DIR=/usr/share/secrets-store-csi-py/assets
USER 65532:65532
ENTRYPOINT ["secrets-store-csi-operator"]
