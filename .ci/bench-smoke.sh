#!/usr/bin/env bash
# A short run of every benchmark from the release build: each load
# measurement must complete with calls and without errors, the in-process
# part must stay within the cache, and the report files must be written;
# each criterion benchmark runs once. Numbers are not judged here (a CI
# machine is not the benchmark machine); BENCHMARKS.md holds a real run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin authmesh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

./target/release/authmesh bench --duration 0.5 --warmup 0.2 --rounds 1 --memory-calls 20000 \
  --json "$work/bench.json" --chart "$work/bench.svg"

python3 - "$work/bench.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
load = report["settings"]["concurrency"]
rows = {(row["name"], row["runtime"], row["in_flight"]): row["measurement"] for row in report["rows"]}
expected = {(name, runtime, load) for name in ("no-auth", "auth-hot")
            for runtime in ("current_thread", "multi_thread", "thread_per_core")}
expected |= {(name, "current_thread", load) for name in ("no-auth+bearer", "auth-cold", "health", "mint")}
expected |= {(name, "current_thread", 1) for name in ("no-auth", "auth-hot")}
missing = expected - rows.keys()
assert not missing, f"missing measurements: {missing}"
for key, measurement in rows.items():
    assert measurement and measurement["calls"] > 0, f"{key}: no calls"
    assert measurement["errors"] == 0, f"{key}: {measurement['first_error']}"
memory = report["memory"]
assert 0 < memory["cached_tokens"] <= memory["cache_capacity"], memory
for rate in ("hot_per_second", "one_caller_per_second"):
    assert memory[f"{rate}_one_core"] > 0 and memory[f"{rate}_two_cores"] > 0, memory
print(f"bench smoke: {len(rows)} measurements, no errors")
PY
grep -q '<svg' "$work/bench.svg"

cargo bench --locked -p auth-interceptor --bench verify -- --test
