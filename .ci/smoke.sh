#!/usr/bin/env bash
# Runs the mesh the two ways the README documents, from release builds on
# the fixed 127.0.0.1 ports, and checks each with grpcurl:
#   1. `authmesh up` (one process), stopped with Ctrl-C (SIGINT);
#   2. token-service, inventory and orders as separate binaries reading the
#      config files `up` wrote, stopped with SIGTERM (what `docker stop` sends).
set -euo pipefail
trap 'echo "smoke failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
root=$PWD

cargo build --release --locked --bin authmesh --bin token-service --bin orders --bin inventory
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
state="$work/.authmesh"
ca="$state/tls/ca.pem"
# Every hop is mTLS: grpcurl presents the demo-cli workload certificate.
mtls() { grpcurl -cacert "$ca" -cert "$state/tls/demo-cli.pem" -key "$state/tls/demo-cli-key.pem" "$@"; }

wait_serving() { # port pid log
  for _ in $(seq 1 120); do
    if [ -f "$ca" ] && mtls "localhost:$1" grpc.health.v1.Health/Check 2>/dev/null | grep SERVING >/dev/null; then
      return 0
    fi
    kill -0 "$2" 2>/dev/null || { cat "$3"; echo "process on :$1 exited early"; exit 1; }
    sleep 0.5
  done
  cat "$3"; echo "nothing SERVING on :$1"; exit 1
}

stop() { # signal pid
  kill "-$1" "$2"
  for _ in $(seq 1 60); do kill -0 "$2" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$2" 2>/dev/null; then echo "pid $2 did not stop on SIG$1"; exit 1; fi
  wait "$2"
}

walkthrough() {
  mtls localhost:50053 list | grep demo.inventory.v1.Inventory >/dev/null
  if grpcurl -cacert "$ca" localhost:50053 list >/dev/null 2>&1; then
    echo "inventory answered a client without a certificate"; exit 1
  fi
  token=$(cd "$work" && "$root/target/release/authmesh" token mint --aud orders)
  mtls -H "authorization: Bearer $token" -d '{"sku":"sku-1","quantity":1}' \
    localhost:50052 demo.orders.v1.Orders/PlaceOrder | grep '"reservedBy": "spiffe://authmesh.local/orders"' >/dev/null
  if mtls -d '{"sku":"sku-1"}' localhost:50053 demo.inventory.v1.Inventory/GetStock 2>"$work/err"; then
    echo "GetStock without a token succeeded"; exit 1
  fi
  grep -q Unauthenticated "$work/err"
  # Revoke a token that works; inventory refuses it within a second or two.
  stock=$(cd "$work" && "$root/target/release/authmesh" token mint --aud inventory)
  mtls -H "authorization: Bearer $stock" -d '{"sku":"sku-1"}' \
    localhost:50053 demo.inventory.v1.Inventory/GetStock >/dev/null
  (cd "$work" && "$root/target/release/authmesh" revoke --token "$stock" --reason smoke) >/dev/null
  for _ in $(seq 1 20); do
    if ! mtls -H "authorization: Bearer $stock" -d '{"sku":"sku-1"}' \
        localhost:50053 demo.inventory.v1.Inventory/GetStock >/dev/null 2>"$work/err"; then
      break
    fi
    sleep 0.1
  done
  grep TOKEN_REVOKED "$work/err" >/dev/null || { echo "revoked token still accepted"; cat "$work/err"; exit 1; }
  for t in "$token" "$stock"; do
    if cat "$work"/*.log | grep -F "$t" >/dev/null; then echo "a token appeared in the logs"; exit 1; fi
  done
}

# 1. authmesh up
(cd "$work" && exec "$root/target/release/authmesh" up) >"$work/up.log" 2>&1 &
up=$!; pids+=("$up")
for port in 50051 50053 50052; do wait_serving "$port" "$up" "$work/up.log"; done
walkthrough
stop INT "$up"
echo "smoke: authmesh up served the walkthrough and stopped cleanly on Ctrl-C"

# 2. the same mesh as three processes
for svc in token-service inventory orders; do
  "$root/target/release/$svc" --config "$state/$svc.toml" >"$work/$svc.log" 2>&1 &
  pid=$!; pids+=("$pid"); eval "pid_${svc//-/_}=$pid"
done
wait_serving 50051 "$pid_token_service" "$work/token-service.log"
wait_serving 50053 "$pid_inventory" "$work/inventory.log"
wait_serving 50052 "$pid_orders" "$work/orders.log"
walkthrough
for pid in "$pid_orders" "$pid_inventory" "$pid_token_service"; do stop TERM "$pid"; done
echo "smoke: standalone binaries served the walkthrough and stopped cleanly on SIGTERM"
echo "2 passed, 0 failed"
