#!/usr/bin/env bash
# Installs the ONNX Runtime CPU library from the PyPI wheel into a project-local folder.
# tessera loads it at run time (ort's load-dynamic), so nothing is installed system-wide.
# Usage: scripts/install-onnxruntime.sh [DEST]   (default .tessera/onnxruntime)
# ORT_PACKAGE picks the build: onnxruntime (CPU, default), onnxruntime-gpu (CUDA, TensorRT),
# onnxruntime-openvino; ORT_VERSION its version (default 1.31.1). Its libonnxruntime*.so (the
# providers' libraries too) are extracted.
set -euo pipefail
version="${ORT_VERSION:-1.31.1}"
package="${ORT_PACKAGE:-onnxruntime}"
dest="${1:-.tessera/onnxruntime}"
lib="$dest/lib/libonnxruntime.so.$version"
if [ -f "$lib" ]; then
  exit 0
fi
# shellcheck source=scripts/wheels.sh
. "$(dirname "$0")/wheels.sh"
require_linux "x86_64 aarch64" "Set ORT_DYLIB_PATH to an ONNX Runtime $version library instead."
require_python "onnxruntime==$version"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "Installing ONNX Runtime $version (PyPI wheel $package==$version) into $dest"
download_wheel "manylinux_2_28_$(uname -m)" "$tmp" "$package==$version"
wheel=$(ls "$tmp"/onnxruntime*.whl)
mkdir -p "$dest/lib"
"$python" - "$wheel" "$dest/lib" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime") and ".so" in base:
            with z.open(name) as src, open(os.path.join(out, base), "wb") as dst:
                dst.write(src.read())
PY
test -f "$lib" || { echo "error: $lib not found in the wheel" >&2; exit 1; }
echo "ONNX Runtime installed: $lib"
