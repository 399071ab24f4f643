#!/usr/bin/env bash
# Release tarballs rig-agent-<version>-<target>.tar.gz (binary, systemd units, example
# config, README and the operator's docs/) in $CARGO_TARGET_DIR/dist/ (target/dist/ by default), and the binary sizes.
#
#   cross/build.sh                       # the three release targets
#   cross/build.sh aarch64-unknown-linux-musl
#   RIG_AGENT_PLAIN_STD=1 cross/build.sh # with rustup's prebuilt std (larger, see below)
#
# For the boards' flash, std is rebuilt with the release profile (-Zbuild-std), without its
# backtrace symboliser (panics still unwind, so a panicking probe costs one answer, not the
# agent), and with `optimize_for_size`; panic locations are left out (-Zlocation-detail).
# These are unstable flags: RUSTC_BOOTSTRAP=1 unlocks them on the same stable compiler the
# tests use, with that compiler's own std sources (rustup component rust-src), rather than a
# nightly compiler that nothing else is tested with. That compiler is pinned to an exact
# version (rust-toolchain.toml), so a rustup update cannot change the shipped std; CI runs
# the tests that spawn the agent against every binary this script builds.
#
# Without these flags (RIG_AGENT_PLAIN_STD=1, or plain `cargo build --release --target T`, or
# `cross build --release --target T`) the binaries are the same code with rustup's prebuilt
# std: static too, supported, and about 0.3 MB larger (docs/architecture.md, "Binary size").
# armv7 is built as Thumb-2 (.cargo/config.toml), a fifth smaller than ARM code. The native path links with the
# toolchain's lld, which (unlike GNU ld) does not pad the file to align RELRO to 64 KiB
# pages, and folds identical functions (--icf=all).
#
#   RIG_AGENT_PANIC=abort cross/build.sh   # smallest: about 0.2 MB less, but a panicking
#                                         # probe then restarts the agent instead of
#                                         # answering code 3 (docs/architecture.md)
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
# Cargo's output folder, which CARGO_TARGET_DIR moves (a shared build cache, a CI workspace).
target_dir=${CARGO_TARGET_DIR:-target}
dist=$target_dir/dist
mkdir -p "$dist"

use_cross=no
if command -v cross >/dev/null && { docker info >/dev/null 2>&1 || podman info >/dev/null 2>&1; }; then
  use_cross=yes
fi

need() { # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; }
}

panic=${RIG_AGENT_PANIC:-unwind}
case "$panic" in
  unwind) std_parts=std,panic_unwind std_features=panic-unwind,optimize_for_size ;;
  abort) std_parts=std,panic_abort std_features=optimize_for_size ;;
  *) echo "RIG_AGENT_PANIC is unwind or abort, not $panic" >&2; exit 64 ;;
esac
export CARGO_PROFILE_RELEASE_PANIC=$panic
small_std=()
if [ -z "${RIG_AGENT_PLAIN_STD:-}" ]; then
  if rustup component add rust-src >/dev/null; then
    export RUSTC_BOOTSTRAP=1
    small_std=(-Zbuild-std=$std_parts -Zbuild-std-features=$std_features)
  else
    echo "warning: no rust-src component; building with the prebuilt std (larger binaries)" >&2
  fi
fi
# The toolchain's own lld, through the C compiler driver that links for the target.
gcc_ld=$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld

# Every target's flags first: natively, one cargo run then builds them all, which keeps both
# cores busy through each target's single-threaded LTO (three runs in a row left one idle).
for t in "${targets[@]}"; do
  if [ ${#small_std[@]} -gt 0 ]; then
    # Added to the target's rustflags from .cargo/config.toml (cargo joins the two lists).
    var=CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_RUSTFLAGS
    flags="-Zlocation-detail=none"
    if [ "$use_cross" = no ] && [ -x "$gcc_ld/ld.lld" ]; then
      flags="$flags -C link-arg=-fuse-ld=lld -C link-arg=-B$gcc_ld -C link-arg=-Wl,--icf=all"
    fi
    export "$var=$flags"
  fi
  if [ "$use_cross" = yes ]; then
    CROSS_CONFIG=cross/Cross.toml cross build --release --target "$t" "${small_std[@]}"
  else
    rustup target add "$t" >/dev/null
    case "$t" in
      aarch64-*) need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu ;;
      armv7-*) need arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf ;;
      x86_64-unknown-linux-musl) need musl-gcc musl-tools ;;
    esac
  fi
done
if [ "$use_cross" = no ]; then
  target_args=()
  for t in "${targets[@]}"; do target_args+=(--target "$t"); done
  cargo build --release "${target_args[@]}" "${small_std[@]}"
fi

for t in "${targets[@]}"; do
  name="rig-agent-$version-$t"
  stage=$(mktemp -d)
  mkdir "$stage/$name"
  cp "$target_dir/$t/release/rig-agent" systemd/rig-agent.service systemd/rig-agent-privileged.service systemd/rig-agent.toml README.md "$stage/$name/"
  # The documents the README sends an operator to (the same list as the .deb's assets in
  # Cargo.toml), so that its links work in the unpacked tarball.
  mkdir "$stage/$name/docs"
  cp docs/operations.md docs/configuration.md docs/behaviour.md docs/security.md docs/PROTOCOL.md docs/updates.md "$stage/$name/docs/"
  tar -C "$stage" -czf "$dist/$name.tar.gz" "$name"
  rm -rf "$stage"
  bytes=$(stat -c %s "$target_dir/$t/release/rig-agent")
  printf '%-32s binary %9d bytes (%s MB)   %s\n' "$t" "$bytes" "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1e6 }')" "$dist/$name.tar.gz"
done
