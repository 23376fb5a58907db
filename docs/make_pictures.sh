#!/usr/bin/env bash
# Regenerate docs/goldfish.png and docs/report.png from the exact commands README.md gives (tests/test_docs_pictures.py
# checks that README holds them verbatim), and print how long each took on this machine.
# Needs headless Chromium for the report page (Debian: apt-get install chromium).
# Usage: bash docs/make_pictures.sh [render] [report]   (default: both)
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

if [ -z "${WORK:-}" ]; then
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
[ -e "$WORK/models" ] || ln -s "$ROOT/models" "$WORK/models"
STEPS="${*:-render report}"
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
[[ " $STEPS " == *" report "* ]] || exit 0

machine="$(nproc) CPU cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), load average $(cut -d' ' -f1 /proc/loadavg) at start"
start=$SECONDS
eval "$REPORT_CMD"
echo "make_pictures: report took $((SECONDS - start)) s on $machine"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-extensions \
  --disable-background-networking --user-data-dir="$WORK/profile" --window-size=1280,880 \
  --screenshot="$DOCS/report.png" "file://$WORK/atlas/index.html" 2>/dev/null
echo "make_pictures: wrote $DOCS/report.png"
