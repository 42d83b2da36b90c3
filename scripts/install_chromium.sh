#!/usr/bin/env bash
# A real headless browser for tests/test_html_report.py (it renders report.html): Debian's `chromium`
# package, installed with apt-get when no chromium is on PATH and apt-get can run (as root, or with
# sudo that needs no password). Never fails `make test`: without a browser that one test skips and
# says why. Playwright is not used: it downloads its browsers at run time.
set -u
for b in chromium chromium-browser google-chrome; do
    command -v "$b" >/dev/null 2>&1 && exit 0
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no chromium and no apt-get: tests/test_html_report.py's browser test will skip (install chromium)"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"
else
    echo "note: no chromium, and apt-get needs root: tests/test_html_report.py's browser test will skip" \
         "(sudo apt-get install chromium)"
    exit 0
fi
echo "installing Debian's chromium for the HTML report test (apt-get install chromium) ..."
if $sudo apt-get update -qq >/dev/null 2>&1 \
   && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
   && command -v chromium >/dev/null 2>&1; then
    echo "chromium installed: $(command -v chromium)"
else
    echo "note: apt-get install chromium failed (or put no chromium on PATH): tests/test_html_report.py's browser test will skip"
fi
exit 0
