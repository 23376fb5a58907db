#!/usr/bin/env bash
# Regenerate docs/goldfish.png, docs/report.png and docs/atlas_unit.png from the exact commands README.md gives (tests/test_docs_pictures.py
# checks that README holds them verbatim), and print how long each took on this machine.
# Needs headless Chromium for the report page (Debian: apt-get install chromium).
# Usage: bash docs/make_pictures.sh [render] [report] [unit]   (default: all three)
#   PYTHON=... the interpreter (default python3), DOCS=... where the pictures go (default docs/),
#   WORK=... a folder kept between runs (default: a fresh temporary one): a report there is grown from its cache.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DOCS="${DOCS:-$ROOT/docs}"
CHROMIUM="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$CHROMIUM" ] || { echo "make_pictures: needs chromium (apt-get install chromium)" >&2; exit 2; }

RENDER_CMD='vizcore render models/mobilenet_v2.onnx class:1 45:0-3 --out vizcore-out --force'
REPORT_CMD='vizcore report models/mobilenet_v2.onnx --out atlas --auto --classes 1,9,130'
UNIT_CMD='vizcore report models/mobilenet_v2.onnx --out atlas-data --layers /features/features.9/conv/conv.2/Conv --units-per-layer 6 --classes 1,9,130 --steps 96 --size 112 --data photos/ --alpha'

if [ -z "${WORK:-}" ]; then
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
[ -e "$WORK/models" ] || ln -s "$ROOT/models" "$WORK/models"
STEPS="${*:-render report unit}"
cd "$WORK"
# `vizcore` as README's commands call it, from this checkout's code
vizcore() {
  PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c \
    'import sys; from vizcore.cli import main; sys.exit(main(sys.argv[1:]))' "$@"
}
machine="$(nproc) CPU cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), load average $(cut -d' ' -f1 /proc/loadavg) at start"

if [[ " $STEPS " == *" render "* ]]; then
  start=$SECONDS
  eval "$RENDER_CMD"
  echo "make_pictures: render took $((SECONDS - start)) s on $machine"
  cp vizcore-out/0000_class_1.png "$DOCS/goldfish.png"
  echo "make_pictures: wrote $DOCS/goldfish.png"
fi
if [[ " $STEPS " == *" unit "* ]]; then
  mkdir -p photos  # 128 photos from scikit-image's samples, as bench/evidence.py builds them
  PYTHONPATH="$ROOT" "$PYTHON" -c 'import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1] + "/bench");
from evidence import build_images; build_images(Path("photos"), 128, side=160)' "$ROOT"
  start=$SECONDS
  eval "$UNIT_CMD"
  echo "make_pictures: unit atlas took $((SECONDS - start)) s"
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-extensions \
    --disable-background-networking --user-data-dir="$WORK/profile" --window-size=1280,1900 \
    --screenshot="$WORK/unit.png" "file://$WORK/atlas-data/layer-48.html#u4" 2>/dev/null
  "$PYTHON" -c 'import sys; from PIL import Image; im = Image.open(sys.argv[1]).convert("RGB");
im = im.crop((110, 20, im.width - 110, min(im.height, 1560))); im = im.resize((im.width * 3 // 4, im.height * 3 // 4));
im.quantize(colors=192).save(sys.argv[2], optimize=True)' "$WORK/unit.png" "$DOCS/atlas_unit.png"
  echo "make_pictures: wrote $DOCS/atlas_unit.png"
fi
[[ " $STEPS " == *" report "* ]] || exit 0

machine="$(nproc) CPU cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), load average $(cut -d' ' -f1 /proc/loadavg) at start"
start=$SECONDS
eval "$REPORT_CMD"
echo "make_pictures: report took $((SECONDS - start)) s on $machine"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-extensions \
  --disable-background-networking --user-data-dir="$WORK/profile" --window-size=1280,880 \
  --screenshot="$DOCS/report.png" "file://$WORK/atlas/index.html" 2>/dev/null
echo "make_pictures: wrote $DOCS/report.png"
