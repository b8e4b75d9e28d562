#!/usr/bin/env bash
# Creates (or updates) the virtual environment of the Python baseline and prints its python path.
#
#   benches/baseline/setup.sh [VENV]     default VENV: <repo>/.tessera/baseline-venv
#
# Idempotent: an existing venv is reused, and pip runs only when requirements.txt changed since the
# last successful install. Needs Python >= 3.11 (tomllib); set PYTHON to pick the interpreter.
# Progress goes to stderr; the only stdout line is the venv's python path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/.tessera/baseline-venv}"
python="${PYTHON:-python3}"
requirements="$here/requirements.txt"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup.sh: $python is missing or older than 3.11 (tomllib); set PYTHON=python3.11" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup.sh: creating $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi

stamp="$venv/.baseline-requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "setup.sh: installing $requirements" >&2
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$requirements" >&2
    echo "$want" > "$stamp"
else
    echo "setup.sh: requirements already installed in $venv" >&2
fi

"$venv/bin/python" -c 'import confluent_kafka, numpy, onnxruntime, PIL' >&2
echo "$(cd "$venv" && pwd)/bin/python"
