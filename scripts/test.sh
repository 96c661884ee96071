#!/usr/bin/env bash
# Set up everything the tests need from nothing, then run them:  bash scripts/test.sh [pytest args]
# System packages (headless Chromium for the browser test) come from Debian; Python ones from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the tests need: chromium (browser tests), a Japanese font (the Japanese UI
# screenshot shows text, not boxes), redis-server (the scale-out tests); one apt run for all.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/opentype/ipafont-gothic/ipag.ttf ] || need+=(fonts-ipafont-gothic)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
    || echo "warning: could not install ${need[*]}; the tests that need them will be skipped"
fi
bash scripts/setup.sh --dev
. .venv/bin/activate
ruff check src tests bench
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest "$@"
