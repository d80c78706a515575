# The pod sandbox image (registry.k8s.io/pause stand-in): Debian's static catatonit in pause mode
# (`-P`, as podman uses it). Build context: a directory holding `catatonit` (hack/images.sh).
FROM scratch
COPY catatonit /pause
USER 65535:65535
ENTRYPOINT ["/pause", "-P"]
