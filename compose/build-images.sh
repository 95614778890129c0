#!/usr/bin/env bash
# Builds the image the compose cluster runs (authmesh:local, or $AUTHMESH_COMPOSE_IMAGE):
# statically linked release binaries (glibc with crt-static) in a FROM scratch
# image. Needs cargo and a Docker engine; pulls nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

image="${AUTHMESH_COMPOSE_IMAGE:-authmesh:local}"
target="$(uname -m)-unknown-linux-gnu"
bins=(authmesh token-service orders inventory)
bin_args=()
for bin in "${bins[@]}"; do bin_args+=(--bin "$bin"); done

# Static glibc resolves names (service names through Docker's DNS,
# localhost through /etc/hosts) without NSS modules from glibc 2.34 on.
# With --target, these flags reach only the binaries, not build scripts or
# proc macros; the static build lives in target/$target, apart from `cargo build`'s.
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --locked --target "$target" "${bin_args[@]}"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
for bin in "${bins[@]}"; do
  cp "target/$target/release/$bin" "$stage/"
done
cp compose/Dockerfile "$stage/"
docker build --quiet --tag "$image" "$stage"
echo "built $image"
