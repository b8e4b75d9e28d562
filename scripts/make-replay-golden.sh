#!/usr/bin/env bash
# Remakes the replay golden from the shared images: a recording of two cameras sending every
# image, run through the pipeline with tests/golden/replay/verify.toml. The replay tests hold
# the golden's dog.jpg against the independent reference (tests/golden/yolox_nano_dog_full_frame.json).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TESSERA_ASSETS:?set TESSERA_ASSETS to the shared assets folder}"
cargo build -p tessera
recording="$(mktemp -d)/shared-images.mcap"
target/debug/tessera replay make \
  --images "$TESSERA_ASSETS/images" --camera cam-a \
  --images "$TESSERA_ASSETS/images" --camera cam-b \
  --fps 5 --start 2026-11-30T08:00:00Z --out "$recording"
target/debug/tessera replay verify "$recording" \
  --config tests/golden/replay/verify.toml \
  --expected tests/golden/replay/shared-images.mcap --write-golden
target/debug/tessera replay info tests/golden/replay/shared-images.mcap | head -12
