#!/usr/bin/env bash
# Release tarballs rig-agent-<version>-<target>.tar.gz (binary, systemd unit, example
# config, README) in target/dist/, and the binary sizes.
#
#   cross/build.sh                       # the three release targets
#   cross/build.sh aarch64-unknown-linux-musl
#
# With `cross` and a working container engine it uses cross (CROSS_CONFIG=cross/Cross.toml).
# Otherwise it builds natively: rustup's target std plus Debian's cross gcc, installed here
# when missing (as root). rustup has no armv7 musl std for current stable, so armv7 ships as
# gnueabihf linked statically (+crt-static, see .cargo/config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
dist=target/dist
mkdir -p "$dist"

use_cross=no
if command -v cross >/dev/null && { docker info >/dev/null 2>&1 || podman info >/dev/null 2>&1; }; then
  use_cross=yes
fi

need() { # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; }
}

for t in "${targets[@]}"; do
  if [ "$use_cross" = yes ]; then
    CROSS_CONFIG=cross/Cross.toml cross build --release --target "$t"
  else
    rustup target add "$t" >/dev/null
    case "$t" in
      aarch64-*) need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu ;;
      armv7-*) need arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf ;;
      x86_64-unknown-linux-musl) need musl-gcc musl-tools ;;
    esac
    cargo build --release --target "$t"
  fi
  name="rig-agent-$version-$t"
  stage=$(mktemp -d)
  mkdir "$stage/$name"
  cp "target/$t/release/rig-agent" systemd/rig-agent.service systemd/rig-agent.toml README.md "$stage/$name/"
  tar -C "$stage" -czf "$dist/$name.tar.gz" "$name"
  rm -rf "$stage"
  printf '%-32s binary %9d bytes   %s\n' "$t" "$(stat -c %s "target/$t/release/rig-agent")" "$dist/$name.tar.gz"
done
