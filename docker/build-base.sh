#!/bin/sh
# Make the base image corral-base:bookworm without any image registry:
# debootstrap a minimal Debian with Python, iproute2 and ZooKeeper, import it.
#
#   docker/build-base.sh [MIRROR] [TAG]
#
# About a minute and ~400 MB (most of it the JRE ZooKeeper needs). Needs root
# and `apt-get install debootstrap`; DOCKER_HOST selects the daemon.
set -eu
mirror=${1:-http://deb.debian.org/debian}
tag=${2:-corral-base:bookworm}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
    --include=python3,python3-venv,iproute2,procps,zookeeper,libslf4j-java \
    bookworm "$root" "$mirror"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import - "$tag"
