#!/usr/bin/env bash
# Starts the mesh exactly as the README says (release build, fixed ports on
# 127.0.0.1), checks it with grpcurl, and stops it with Ctrl-C (SIGINT).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin authmesh
work=$(mktemp -d)
log="$work/up.log"
trap 'kill -INT "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

(cd "$work" && exec "$OLDPWD/target/release/authmesh" up) >"$log" 2>&1 &
pid=$!
ca="$work/.authmesh/tls/ca.pem"

# Poll health (bounded), never a fixed sleep.
for _ in $(seq 1 120); do
  if [ -f "$ca" ] && grpcurl -cacert "$ca" localhost:50053 grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then
    break
  fi
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "authmesh up exited early"; exit 1; }
  sleep 0.5
done

grpcurl -cacert "$ca" localhost:50053 list | grep -q demo.inventory.v1.Inventory
token=$(cd "$work" && "$OLDPWD/target/release/authmesh" token mint --aud orders)
grpcurl -cacert "$ca" -H "authorization: Bearer $token" -d '{"sku":"sku-1","quantity":1}' \
  localhost:50052 demo.orders.v1.Orders/PlaceOrder | grep -q '"reservedBy": "orders"'
if grpcurl -cacert "$ca" -d '{"sku":"sku-1"}' localhost:50053 demo.inventory.v1.Inventory/GetStock 2>"$work/err"; then
  echo "GetStock without a token succeeded"; exit 1
fi
grep -q Unauthenticated "$work/err"
if grep -q "$token" "$log"; then echo "a token appeared in the logs"; exit 1; fi

kill -INT "$pid"
for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$pid" 2>/dev/null; then echo "authmesh up did not stop on Ctrl-C"; exit 1; fi
wait "$pid"
echo "smoke: authmesh up served the walkthrough and stopped cleanly"
echo "1 passed, 0 failed"
