#!/usr/bin/env bash
# Prints the path of a headless Chromium from the distribution's packages, installing the
# package when it is missing and this runs as root with apt (Debian, Ubuntu: the CI machine).
# Used by cli/tests/page.rs, which loads the household's page in it.
set -euo pipefail
for b in chromium-headless-shell chromium chromium-browser; do
    if command -v "$b" >/dev/null 2>&1; then
        command -v "$b"
        exit 0
    fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends chromium-headless-shell >&2 \
        || { apt-get update >&2 && apt-get install -y --no-install-recommends chromium-headless-shell >&2; }
    command -v chromium-headless-shell
    exit 0
fi
echo "no headless Chromium here: install the distribution's chromium-headless-shell (or chromium) package" >&2
exit 1
