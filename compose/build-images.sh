#!/usr/bin/env bash
# Builds the two images the compose cluster runs, pulling nothing:
# - authmesh:local ($AUTHMESH_COMPOSE_IMAGE): statically linked release
#   binaries (glibc with crt-static) in a FROM scratch image;
# - authmesh-etcd:local ($AUTHMESH_COMPOSE_ETCD_IMAGE): this machine's
#   etcd and etcdctl (Debian's etcd-server and etcd-client) with the
#   libraries they link, in a FROM scratch image.
# Needs cargo, a Docker engine, etcd and etcdctl.
set -euo pipefail
cd "$(dirname "$0")/.."

image="${AUTHMESH_COMPOSE_IMAGE:-authmesh:local}"
etcd_image="${AUTHMESH_COMPOSE_ETCD_IMAGE:-authmesh-etcd:local}"
for tool in etcd etcdctl; do
  command -v "$tool" >/dev/null || {
    echo "$tool is required: apt-get install etcd-server etcd-client" >&2
    exit 1
  }
done
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

mkdir "$stage/authmesh" "$stage/authmesh/keys"
for bin in "${bins[@]}"; do
  cp "target/$target/release/$bin" "$stage/authmesh/"
done
cp compose/Dockerfile "$stage/authmesh/"
docker build --quiet --tag "$image" "$stage/authmesh" >/dev/null
echo "built $image"

root="$stage/etcd/rootfs"
mkdir -p "$root/usr/local/bin" "$stage/etcd/data"
for tool in etcd etcdctl; do
  path="$(command -v "$tool")"
  cp "$path" "$root/usr/local/bin/"
  # Every library the binary loads, at the path it is loaded from.
  for lib in $(ldd "$path" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
cp compose/etcd.Dockerfile "$stage/etcd/Dockerfile"
docker build --quiet --tag "$etcd_image" "$stage/etcd" >/dev/null
echo "built $etcd_image"
