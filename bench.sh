#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md in one run: builds the release binary, installs the peer
# agents (and minisign, which signs the update example's build) from Debian's packages, and
# prints each table. Takes about 5 minutes.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v prometheus-node-exporter >/dev/null || ! command -v zabbix_agent2 >/dev/null \
  || ! command -v minisign >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-node-exporter zabbix-agent2 minisign
fi
cargo build --release --examples
echo "== queries, RSS, heartbeats (examples/bench.rs)"; target/release/examples/bench
echo; echo "== footprint: binary, RSS after 2 000 get_system_baseinfo and where it sits (examples/footprint.rs)"; target/release/examples/footprint
echo; echo "== draining 20 000 spooled warnings (examples/drain.rs)"; target/release/examples/drain
echo; echo "== remote actions (examples/actions_bench.rs)"; target/release/examples/actions_bench
echo; echo "== disk monitor scans (examples/scan_bench.rs)"; target/release/examples/scan_bench
echo; echo "== fleet of 50 agents, gateway restart and outage (examples/fleet.rs)"; target/release/examples/fleet 50
echo; echo "== beside node_exporter and zabbix_agent2 (examples/peers.rs)"; target/release/examples/peers
echo; echo "== kernel events: detection latency, idle cost, storm (examples/event_latency.rs, root)"; target/release/examples/event_latency
echo; echo "== privilege separation: RSS of the two halves, the hop (examples/privsep.rs, root)"; target/release/examples/privsep
echo; echo "== kernel line -> warning, direct and through the privileged half (examples/kmsg_hop.rs, root)"; target/release/examples/kmsg_hop
echo; echo "== GPU failures: Xid record -> warning, a record storm, the recogniser (examples/gpu_latency.rs, root)"; target/release/examples/gpu_latency
echo; echo "== connect directly and through HTTP CONNECT and SOCKS5 proxies (examples/proxy_connect.rs)"; target/release/examples/proxy_connect
echo; echo "== an update from the console: time to installed, bytes downloaded (examples/update_figures.rs)"; target/release/examples/update_figures
