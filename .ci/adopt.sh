#!/usr/bin/env bash
# Adopts the library as a team would, outside this workspace: a fresh crate
# made of the README's Cargo lines and its quick-start code (which must be
# examples/src/bin/static_jwks.rs word for word), the examples' own proto and
# build.rs. It is built from a cold target directory (the time and the crate
# count are printed), its crate graph is checked for anything a verifier
# must not link, and the service is run and called with grpcurl using a
# token signed by PyJWT.
set -euo pipefail
trap 'echo "adopt failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

app="$work/echo"
mkdir -p "$app/src"
cp -r examples/proto examples/build.rs "$app/"
python3 - "$root" "$app" <<'EOF'
import pathlib, re, sys
root, app = map(pathlib.Path, sys.argv[1:])
readme = (root / "README.md").read_text()
def block(marker, lang):
    match = re.search(r"<!-- %s -->\s*```%s\n(.*?)```" % (re.escape(marker), lang), readme, re.S)
    if not match:
        sys.exit(f"README.md has no ```{lang} block after <!-- {marker} -->")
    return match.group(1)
main = block("adopt:main", "rust")
example = (root / "examples/src/bin/static_jwks.rs").read_text()
if main != example:
    sys.exit("README.md's quick start differs from examples/src/bin/static_jwks.rs: make them the same")
deps = block("adopt:cargo", "toml")
deps, count = re.subn(r'path = "[^"]*auth-interceptor"', f'path = "{root}/auth-interceptor"', deps)
if count != 1:
    sys.exit("README.md's Cargo lines must depend on auth-interceptor by path")
(app / "src/main.rs").write_text(main)
(app / "Cargo.toml").write_text(
    '[package]\nname = "echo"\nversion = "0.1.0"\nedition = "2024"\n\n'
    '# Not part of the AuthMesh workspace.\n[workspace]\n\n' + deps)
EOF
# The other Rust snippets of the docs are compiled doc examples.
python3 .ci/doc-snippets.py "$root"

# The workspace's versions, so the check builds what CI tested.
cp Cargo.lock "$app/"
cd "$app"

echo "== crates a verify-only service links (normal dependencies)"
tree=$(cargo tree -e normal --prefix none | sed 's/ (\*)$//; s/ (proc-macro)$//' | sort -u)
echo "$tree" | wc -l
for banned in rcgen authmesh-signing authmesh-proto x509-parser metrics toml protox; do
  if echo "$tree" | grep -q "^$banned v"; then
    echo "a verify-only service links $banned:"; cargo tree -e normal -i "$banned"; exit 1
  fi
done
# jsonwebtoken verifies; it must be the only crypto stack, with one backend.
echo "$tree" | grep -q "^jsonwebtoken v" || { echo "jsonwebtoken missing"; exit 1; }
if echo "$tree" | grep -q "^aws-lc-rs v"; then echo "a second crypto backend (aws-lc-rs)"; exit 1; fi

echo "== cold build"
export CARGO_TARGET_DIR="$root/target/adopt"
rm -rf "$CARGO_TARGET_DIR"
start=$(date +%s)
cargo build --quiet
echo "cold build: $(( $(date +%s) - start )) s"

echo "== run it and call it"
python3 - "$work" <<'EOF'
import json, sys, time, pathlib, base64
import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives import serialization
work = pathlib.Path(sys.argv[1])
key = ed25519.Ed25519PrivateKey.generate()
raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
jwk = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "adopt-1", "alg": "EdDSA", "use": "sig"}
(work / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
now = int(time.time())
claims = {"iss": "https://issuer.example", "sub": "spiffe://example.test/caller", "aud": "echo",
          "iat": now, "exp": now + 300, "jti": "adopt-token-1", "scope": "echo.say"}
token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "adopt-1", "typ": "at+jwt"})
(work / "token").write_text(token)
EOF
ISSUER=https://issuer.example JWKS_FILE="$work/jwks.json" LISTEN=127.0.0.1:0 \
  "$CARGO_TARGET_DIR/debug/echo" > "$work/out" 2>&1 &
server=$!
for _ in $(seq 1 100); do grep -q "listening on" "$work/out" && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$work/out" | head -n 1)
[ -n "$addr" ] || { cat "$work/out"; echo "the service did not start"; exit 1; }
call() { grpcurl -plaintext -import-path proto -proto demo/echo/v1/echo.proto -d '{"text":"hi"}' "$@" "$addr" demo.echo.v1.Echo/Say 2>&1 || true; }
answer=$(call -H "authorization: Bearer $(cat "$work/token")")
echo "$answer"
echo "$answer" | grep -q 'spiffe://example.test/caller says hi' || { cat "$work/out"; exit 1; }
refused=$(call)
echo "$refused"
echo "$refused" | grep -q 'Unauthenticated' || exit 1
echo "adopt: a verify-only service outside the workspace builds, links no signing code, and verifies"
