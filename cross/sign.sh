#!/usr/bin/env bash
# Signs the release binaries cross/build.sh made, for rigs to update themselves from the
# console (docs/operations.md, "Updating rigs from the console"): one .minisig beside each
# binary, with the trusted comment the rig checks, `version=<v> target=<triple>`, and the
# fields of the update_agent offer (size, sha256) printed for the console.
#
#   cross/sign.sh ~/.minisign/rig-agent.key                # the three release targets
#   cross/sign.sh ~/.minisign/rig-agent.key aarch64-unknown-linux-musl
#
# Needs the stock minisign tool (Debian: apt-get install minisign). The secret key stays on
# the machine that signs; rigs hold only the public key (update.keys).
set -euo pipefail
cd "$(dirname "$0")/.."

key=${1:?usage: cross/sign.sh SECRET_KEY [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
target_dir=${CARGO_TARGET_DIR:-target}

for t in "${targets[@]}"; do
    bin="$target_dir/$t/release/rig-agent"
    [ -f "$bin" ] || { echo "no $bin: run cross/build.sh $t first" >&2; exit 1; }
    out="$target_dir/dist/rig-agent-$version-$t"
    mkdir -p "$target_dir/dist"
    cp "$bin" "$out"
    minisign -S -s "$key" -m "$out" -x "$out.minisig" -t "version=$version target=$t"
    echo "$out: size $(stat -c %s "$out") sha256 $(sha256sum "$out" | cut -d' ' -f1)"
done
