#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: `bash fuzz/run.sh [SECONDS]`
# (default 60 each). Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Fails on the first crash, leaving
# the input under fuzz/artifacts/<target>/ (reproduce it with
# `cargo +nightly fuzz run <target> <file>`).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
for target in bearer_token jwks_document; do
  # New inputs go to the first directory (under target/, never committed);
  # the committed seeds in fuzz/seeds are read as well.
  corpus="target/fuzz/corpus/$target"
  mkdir -p "$corpus"
  echo "fuzzing $target for ${seconds}s"
  cargo +nightly fuzz run --fuzz-dir fuzz --target-dir target/fuzz \
    "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10
done
