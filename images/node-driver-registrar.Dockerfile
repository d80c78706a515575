# kubernetes-csi/node-driver-registrar, built from its release source (hack/build-tools.sh registrar:
# static, vendored, -X main.version=<release>). Upstream's image is the same binary on distroless/static.
# Build context: the directory holding `csi-node-driver-registrar`.
FROM scratch
ARG VERSION
LABEL org.opencontainers.image.title="csi-node-driver-registrar" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/kubernetes-csi/node-driver-registrar" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY csi-node-driver-registrar /csi-node-driver-registrar
ENTRYPOINT ["/csi-node-driver-registrar"]
