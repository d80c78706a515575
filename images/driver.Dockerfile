# The node plugin image. Runs as root and privileged (it mounts tmpfs into kubelet's pod
# directories); everything else about it is kept small: no compiler, no pip cache, no shell tools
# beyond the base image.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
# Reproducible builds: pass SOURCE_DATE_EPOCH (wheel timestamps, hash-checked .pyc files).
ARG SOURCE_DATE_EPOCH
WORKDIR /src
# Only the driver's part and the layers it depends on (README "Packaging"): no operator, no provider.
COPY constraints.txt ./
COPY kube kube
COPY proto proto
COPY driver driver
RUN pip wheel --no-cache-dir -c constraints.txt -w /wheels ./kube ./proto ./driver

FROM ${PYTHON_IMAGE}
# Reproducible builds: pass SOURCE_DATE_EPOCH (wheel timestamps, hash-checked .pyc files).
ARG SOURCE_DATE_EPOCH
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="secrets-store-csi-py driver" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV SSCSI_VERSION=${VERSION} PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=wheels /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels secrets-store-csi-py-driver \
 && rm -rf /wheels
ENTRYPOINT ["secrets-store-csi-driver"]
