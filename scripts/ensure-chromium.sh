#!/usr/bin/env bash
# Make sure Debian's chromium is present for the real-browser test (tests/test_report_browser.py);
# install the package when apt-get is usable. Without it (no root, no password-less sudo) the test is
# skipped with the reason printed here, except in CI (CI=true), where it must run.
set -euo pipefail
if command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "chromium not found; installing Debian's package chromium (for the real-browser test) ..."
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
if command -v apt-get >/dev/null && [ "$sudo" != none ]; then
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update only when needed: the package lists do not know chromium, or they are stale (install fails)
  if ! apt-cache show chromium >/dev/null 2>&1 || ! $sudo apt-get install -y -q chromium >/dev/null; then
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; } || true
  fi
  command -v chromium >/dev/null && { echo "installed $(command -v chromium)"; exit 0; }
fi
msg="chromium is missing and could not be installed automatically (needs apt-get as root or password-less sudo); install it with: apt-get install -y chromium"
if [ "${CI:-}" = true ]; then
  echo "error: $msg" >&2
  exit 1
fi
echo "warning: $msg -- the real-browser test will be skipped" >&2
