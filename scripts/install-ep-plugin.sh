#!/usr/bin/env bash
# Installs an ONNX Runtime execution provider plugin from its PyPI wheel into a project-local
# folder: the wheel's package folder (the plugin library, and the runtime it bundles, which the
# plugin finds beside itself through its RUNPATH $ORIGIN, and their data files). tessera
# registers the plugin at run time (`kind = "plugin"`, `library = ...`), into the standard ONNX
# Runtime library.
# Usage: scripts/install-ep-plugin.sh PACKAGE==VERSION DEST
#   e.g. scripts/install-ep-plugin.sh onnxruntime-ep-openvino==1.8.1 .tessera/ep/openvino
# Prints nothing when DEST already holds that version.
set -euo pipefail
requirement="${1:?usage: $0 PACKAGE==VERSION DEST}"
dest="${2:?usage: $0 PACKAGE==VERSION DEST}"
case "$requirement" in
  *==*) ;;
  *) echo "error: pin the plugin's version: PACKAGE==VERSION, not '$requirement'" >&2; exit 1 ;;
esac
marker="$dest/.installed-$requirement"
if [ -f "$marker" ]; then
  exit 0
fi
# shellcheck source=scripts/wheels.sh
. "$(dirname "$0")/wheels.sh"
require_linux "x86_64 aarch64"
require_python "$requirement"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "Installing the execution provider plugin $requirement into $dest"
download_wheel "manylinux_2_28_$(uname -m)" "$tmp" "$requirement"
wheel=$(ls "$tmp"/*.whl)
rm -rf "$dest"
mkdir -p "$dest"
"$python" - "$wheel" "$dest" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
found = []
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        parts = name.split("/")
        # The package folder (libraries and their data, e.g. OpenVINO's GPU kernel cache), not
        # the Python wrapper or the wheel's metadata.
        if len(parts) == 2 and parts[1] and not parts[0].endswith(".dist-info") and not parts[1].endswith(".py"):
            target = os.path.join(out, parts[1])
            with z.open(info) as src, open(target, "wb") as dst:
                dst.write(src.read())
            os.chmod(target, 0o755)
            if "_plugin.so" in parts[1] or "providers" in parts[1]:
                found.append(parts[1])
if not found:
    sys.exit(f"error: {wheel} holds no execution provider plugin library")
PY
touch "$marker"
echo "Plugin installed: $(ls "$dest"/libonnxruntime_providers_*.so 2>/dev/null || ls "$dest")"
