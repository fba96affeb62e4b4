#!/usr/bin/env bash
# Debian packages the report tests use: poppler-utils (pdftoppm, PDF pages to PNG) and chromium (HTML
# screenshot). Installed only where missing and only as root; the tests that need them skip, saying why, elsewhere.
set -uo pipefail
missing=()
command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (for the report tests)"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || echo "could not install ${missing[*]}; the tests that need them will skip"
else
  echo "not root or no apt-get: ${missing[*]} not installed; the tests that need them will skip"
fi
exit 0
