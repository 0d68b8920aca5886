#!/usr/bin/env bash
# Screenshots of the built documentation in headless Chromium: the front page, a tutorial and an API page.
# Usage: tools/docs_screenshots.sh HTML_DIR OUT_DIR   (`make docs-check`; Debian: apt-get install chromium)
set -euo pipefail
HTML=$(realpath "$1")
OUT=$2
BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$BROWSER" ]; then
  echo "docs-check: no Chromium found (Debian: apt-get install chromium)" >&2
  exit 1
fi
mkdir -p "$OUT"
for page in index getting_started how_it_works api; do
  "$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1600 \
      --screenshot="$OUT/$page.png" "file://$HTML/$page.html" 2>/dev/null
  echo "docs-check: $OUT/$page.png"
done
