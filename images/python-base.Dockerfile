# NOT a user-facing image: the stand-in this project builds offline for the Python base the other
# Dockerfiles name (FROM docker.io/library/python:3.11-slim-bookworm), which cannot be pulled here.
# The build context holds rootfs.tar: Debian bookworm from `debootstrap --variant=minbase` with Debian's
# python3.11, python3-pip, ca-certificates and netbase (hack/images.sh makes it once and caches it).
# It differs from the public image: Debian's interpreter in /usr/bin (not one compiled into
# /usr/local), pip from Debian, no EXTERNALLY-MANAGED marker (pip installs system-wide, as there).
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHON_VERSION=3.11
CMD ["python3"]
