#!/usr/bin/env bash
# Regenerate the README's screenshot of the report (docs/img/report.png):
#   report/screenshot.sh [ATTNSCOPE] [TRACE] [OUT.png] [HEIGHT]
# Makes the report of TRACE and photographs its top (HEIGHT px, default 1790: the header,
# where attention goes, entropy and rank, per-layer distributions) in headless Chromium.
set -euo pipefail
bin=${1:-build/attnscope}
trace=${2:-data/samples/smollm2-135m-needle-2k.safetensors}
out=${3:-docs/img/report.png}
height=${4:-1790}
chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || { echo "screenshot.sh: chromium is not installed (apt-get install chromium)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" report "$trace" -o "$tmp/report.html" --quiet
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
  --user-data-dir="$tmp/profile" --screenshot="$tmp/shot.png" --window-size=1400,"$height" \
  "file://$tmp/report.html" >/dev/null 2>&1
mv "$tmp/shot.png" "$out"
echo "screenshot.sh: wrote $out"
