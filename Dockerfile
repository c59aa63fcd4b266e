# sysrunner for `docker run --privileged` (the fallback where sysbox cannot be installed):
# the sysbox image (Dockerfile.sysbox) plus one line. Everything both images hold comes from
# Dockerfile.sysbox and image/install.sh; only what differs is here.
#
# Build:  docker buildx build -f Dockerfile.sysbox -t sysrunner:sysbox .
#         docker buildx build -f Dockerfile --build-arg SYSBOX_IMAGE=sysrunner:sysbox -t sysrunner:privileged .
#
# A privileged job can take the host: prefer the sysbox image wherever sysbox installs.
ARG SYSBOX_IMAGE=ghcr.io/sysrunner/sysrunner:0.1.0
FROM ${SYSBOX_IMAGE}
# The inner dockerd's overlay2 cannot live on the container's own overlay root: give it a
# volume. Sysbox mounts one itself, which is why the sysbox image declares none. Compose makes
# it anonymous (one per replica) and `docker compose down -v` removes it.
VOLUME /var/lib/docker
