#!/usr/bin/env bash
# mypy --strict over the corral namespace. The top-level folders map to
# corral.* only through pyproject's package-dir, which mypy cannot follow in
# an editable install, so check a tree of symlinks laid out as installed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=build/typecheck
rm -rf "$root" && mkdir -p "$root/corral"
for f in corral/*; do ln -s "$PWD/$f" "$root/corral/"; done
for d in master slave frameworks proto; do ln -s "$PWD/$d" "$root/corral/$d"; done
cd "$root"
exec mypy --config-file ../../pyproject.toml -p corral "$@"
