#!/usr/bin/env bash
# What both images install, in one place: Dockerfile (privileged) and Dockerfile.sysbox run the
# same steps, so the two images differ only in the lines their Dockerfiles say differ.
#
#   install.sh system            packages, Docker Engine, the runner user (the image's root stage)
#   install.sh runner-download   fetch the actions/runner release, check its SHA-256, unpack it
#   install.sh runner-unpack F   unpack a local runner tarball F, or the one .tar.gz in directory F
#                                (the fake runner, a mirror's copy)
#
# Settings come from the environment (the Dockerfiles pass their ARGs):
#   DOCKER_SOURCE   official (Docker's apt repository: docker-ce and docker-ce-cli pinned to
#                   DOCKER_VERSION, containerd.io, which carries runc, to CONTAINERD_VERSION) or
#                   distro (the base distribution's docker.io; both versions are then not used)
#   DOCKER_VERSION  e.g. 29.4.0
#   CONTAINERD_VERSION  e.g. 2.2.3
#   RUNNER_UID      uid of the runner user (1001, as in GitHub's own runner images)
#   RUNNER_VERSION, RUNNER_SHA256_AMD64, RUNNER_SHA256_ARM64, TARGETARCH   for runner-download
set -euo pipefail

RUNNER_DIR=/opt/actions-runner
export DEBIAN_FRONTEND=noninteractive

die() {
  echo "install.sh: $*" >&2
  exit 1
}

apt_install() {
  apt-get install -y --no-install-recommends "$@"
}

# The newest package whose name matches an extended regex, e.g. libicu74 or libicu76: the
# runner's .NET needs ICU, and every release of Ubuntu and Debian names it differently.
newest_package() {
  apt-cache pkgnames | grep -E "^$1\$" | sort -V | tail -n 1
}

# The repository's full version of package $1 whose upstream version is $2. Docker's apt
# versions carry an epoch on docker-ce (5:29.4.0-1~ubuntu.24.04~noble) and none on containerd.io
# (2.2.3-1~ubuntu.24.04~noble); madison lists the newest revision first.
apt_version() {
  apt-cache madison "$1" | awk -v want="$2" '
    { v = $3; sub(/^[0-9]+:/, "", v); sub(/-[^-]*$/, "", v) } v == want { print $3; exit }'
}

install_docker_official() {
  [ -n "${DOCKER_VERSION:-}" ] || die "DOCKER_SOURCE=official needs DOCKER_VERSION (e.g. 29.4.0)"
  [ -n "${CONTAINERD_VERSION:-}" ] || die "DOCKER_SOURCE=official needs CONTAINERD_VERSION (e.g. 2.2.3)"
  # shellcheck source=/dev/null
  . /etc/os-release
  install -m 0755 -d /etc/apt/keyrings
  curl -fsSL "https://download.docker.com/linux/${ID}/gpg" -o /etc/apt/keyrings/docker.asc
  chmod a+r /etc/apt/keyrings/docker.asc
  echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/${ID} ${VERSION_CODENAME} stable" \
    > /etc/apt/sources.list.d/docker.list
  apt-get update
  local docker containerd
  docker=$(apt_version docker-ce "${DOCKER_VERSION}")
  [ -n "$docker" ] || die "Docker ${DOCKER_VERSION} is not in Docker's repository for ${ID} ${VERSION_CODENAME}; see apt-cache madison docker-ce"
  containerd=$(apt_version containerd.io "${CONTAINERD_VERSION}")
  [ -n "$containerd" ] || die "containerd.io ${CONTAINERD_VERSION} is not in Docker's repository for ${ID} ${VERSION_CODENAME}; see apt-cache madison containerd.io"
  # containerd.io ships runc too: pinning it pins the runtime the inner dockerd starts
  # containers with (runc >= 1.3.3 is what needs sysbox >= 0.7.0).
  apt_install "docker-ce=${docker}" "docker-ce-cli=${docker}" "containerd.io=${containerd}" \
    docker-buildx-plugin docker-compose-plugin
}

install_docker_distro() {
  # Debian 13 splits the CLI into docker-cli; Ubuntu's docker.io still carries it.
  local compose cli
  compose=$(newest_package 'docker-compose-v2|docker-compose')
  cli=$(newest_package 'docker-cli')
  apt_install docker.io docker-buildx ${cli:+"$cli"} ${compose:+"$compose"}
  echo "install.sh: DOCKER_SOURCE=distro: $(dockerd --version)"
}

system() {
  apt-get update
  apt_install ca-certificates curl gnupg
  case "${DOCKER_SOURCE:-official}" in
    official) install_docker_official ;;
    distro) install_docker_distro ;;
    *) die "DOCKER_SOURCE=${DOCKER_SOURCE}: expected official or distro" ;;
  esac

  # What dockerd needs in a container (iptables, fuse-overlayfs as the storage fallback), what
  # sysrunner uses (sudo, busybox-static for tests' images), what jobs expect of a runner, and
  # the libraries the runner's .NET loads (ICU, Kerberos, OpenSSL, zlib).
  local icu ssl
  icu=$(newest_package 'libicu[0-9]+')
  ssl=$(newest_package 'libssl3t64|libssl3')
  apt_install iptables fuse-overlayfs sudo git jq busybox-static \
    build-essential unzip zip xz-utils zstd openssh-client rsync procps tzdata \
    libkrb5-3 zlib1g ${icu:+"$icu"} ${ssl:+"$ssl"}

  # dockerd picks legacy or nft iptables itself (sysrunner links the right one on PATH).
  getent group docker >/dev/null || groupadd --system docker
  local uid=${RUNNER_UID:-1001}
  if ! id runner >/dev/null 2>&1; then
    useradd --uid "$uid" --user-group --groups docker --create-home --shell /bin/bash runner
  fi
  install -d -m 0755 /etc/sudoers.d /var/lib/sysrunner
  # Nothing of the build is left for a job to find.
  apt-get clean
  rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /tmp/* /var/tmp/*
}

# A release unpacked read-only: root-owned, not writable by the runner; sysrunner gives every
# life a writable copy on top of it.
unpack() {
  local tarball=$1
  rm -rf "$RUNNER_DIR"
  install -d -m 0755 "$RUNNER_DIR"
  tar -xzf "$tarball" -C "$RUNNER_DIR" --no-same-owner
  chown -R root:root "$RUNNER_DIR"
  chmod -R go-w "$RUNNER_DIR"
  [ -x "$RUNNER_DIR/bin/Runner.Listener" ] || die "$tarball holds no bin/Runner.Listener: not an actions/runner release"
}

runner_download() {
  local version=${RUNNER_VERSION:?RUNNER_VERSION is required} arch sum arg
  case "${TARGETARCH:-$(dpkg --print-architecture)}" in
    amd64) arch=x64 sum=${RUNNER_SHA256_AMD64:-} arg=RUNNER_SHA256_AMD64 ;;
    arm64) arch=arm64 sum=${RUNNER_SHA256_ARM64:-} arg=RUNNER_SHA256_ARM64 ;;
    *) die "no actions/runner release for architecture ${TARGETARCH:-unknown}" ;;
  esac
  [ -n "$sum" ] || die "no SHA-256 given for the ${arch} runner ${version}: set the build argument ${arg}"
  if ! command -v curl >/dev/null; then
    apt-get update
    apt_install ca-certificates curl
  fi
  local file="actions-runner-linux-${arch}-${version}.tar.gz"
  curl -fsSL -o "/tmp/${file}" "https://github.com/actions/runner/releases/download/v${version}/${file}"
  echo "${sum}  /tmp/${file}" | sha256sum -c - || die "${file}: SHA-256 differs from the pinned one"
  unpack "/tmp/${file}"
  rm -f "/tmp/${file}"
}

case "${1:-}" in
  system) system ;;
  runner-download) runner_download ;;
  runner-unpack)
    [ -n "${2:-}" ] || die "runner-unpack needs a tarball, or a directory holding one"
    if [ -d "$2" ]; then
      shopt -s nullglob
      tarballs=("$2"/*.tar.gz)
      [ "${#tarballs[@]}" -eq 1 ] || die "$2 should hold exactly one .tar.gz, holds ${#tarballs[@]}"
      unpack "${tarballs[0]}"
      rm -rf "$2"
    else
      unpack "$2"
    fi
    ;;
  *) die "usage: install.sh system | runner-download | runner-unpack TARBALL" ;;
esac
