# kubernetes-csi/livenessprobe, built from its release source (hack/build-tools.sh livenessprobe:
# static, vendored, -X main.version=<release>). Upstream's image is the same binary on distroless/static.
# Build context: the directory holding `livenessprobe`.
FROM scratch
ARG VERSION
LABEL org.opencontainers.image.title="livenessprobe" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/kubernetes-csi/livenessprobe" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY livenessprobe /livenessprobe
ENTRYPOINT ["/livenessprobe"]
