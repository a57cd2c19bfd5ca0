#!/usr/bin/env bash
# Runs every fuzz target for a while (default 60 s each) and prints what libFuzzer reports.
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Works on stable Rust without a sanitizer
# (`-s none`): the code under test has no `unsafe` of its own, so a sanitizer adds little;
# with a nightly toolchain, drop `-s none` to run under AddressSanitizer.
#   fuzz/run.sh [SECONDS] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(wire_decode ledger_tx tower_rpc channel_machine)
fi
for t in "${targets[@]}"; do
    echo "=== $t (${seconds} s)"
    cargo fuzz run -s none "$t" -- -max_total_time="$seconds" -max_len=4096 2>&1 \
        | grep -E "^#[0-9]+ +DONE|Done [0-9]+ runs|SUMMARY|panicked|crash-" || true
done
