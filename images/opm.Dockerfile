# NOT a user-facing image: the offline stand-in for quay.io/operator-framework/opm (catalog.Dockerfile's
# base), made of the opm and grpc_health_probe that hack/build-tools.sh builds from their Go modules.
# Build context: a directory holding `opm` and `grpc_health_probe`.
FROM scratch
COPY opm /bin/opm
COPY grpc_health_probe /bin/grpc_health_probe
ENTRYPOINT ["/bin/opm"]
