#!/bin/sh
# Build the corral image from this checkout: wheels of corral and of its
# dependencies (pip, from whatever index or local wheels pip is set up with),
# then `docker build` on top of corral-base:bookworm (docker/build-base.sh).
#
#   docker/build.sh [TAG]        # default corral:latest
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
tag=${1:-corral:latest}
python=${PYTHON:-python3}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
"$python" -m pip wheel --quiet --wheel-dir "$ctx/wheels" "$repo"
mkdir "$ctx/docker"
cp "$here/zookeeper-entrypoint.sh" "$ctx/docker/"
docker build --quiet --tag "$tag" --file "$here/Dockerfile" "$ctx"
