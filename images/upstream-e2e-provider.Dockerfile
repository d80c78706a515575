# The upstream driver's own e2e provider (test/e2eprovider, build tag e2e), built from its release
# source by hack/build-tools.sh upstream-provider. The node tier runs it beside our reference provider:
# a wire-compatibility check that does not share our reading of the provider protocol.
# Build context: the directory holding `e2e-provider`.
FROM scratch
ARG VERSION
LABEL description="Mock provider for Secrets Store CSI Driver" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/kubernetes-sigs/secrets-store-csi-driver" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY e2e-provider /e2e-provider
ENTRYPOINT ["/e2e-provider"]
