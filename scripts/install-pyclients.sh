#!/usr/bin/env bash
# Installs the outside Kafka client of the replay tests, kafka-python (pure Python, from its
# PyPI wheel), into a project-local folder used as PYTHONPATH: no virtual environment (which
# some Pythons lack) and nothing system-wide.
# Usage: scripts/install-pyclients.sh [DEST]   (default .tessera/pyclients)
set -euo pipefail
dest="${1:-.tessera/pyclients}"
requirements="$(dirname "$0")/pyclients-requirements.txt"
marker="$dest/site/.installed-$(sha256sum "$requirements" | cut -c1-16)"
if [ -f "$marker" ]; then
  exit 0
fi
python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "error: python3 with pip is needed to fetch kafka-python from PyPI" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "Installing $(tr '\n' ' ' < "$requirements")into $dest/site"
"$python" -m pip download --quiet --no-deps --only-binary=:all: -r "$requirements" -d "$tmp"
rm -rf "$dest/site"
mkdir -p "$dest/site"
"$python" - "$dest/site" "$tmp"/*.whl <<'PY'
import sys, zipfile
out = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(out)
PY
"$python" -c "import sys; sys.path.insert(0, '$dest/site'); import kafka; print('kafka-python', kafka.__version__)"
touch "$marker"
