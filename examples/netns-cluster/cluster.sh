#!/usr/bin/env bash
# A cluster of H hosts with K NICs each, in network namespaces, with a `shoal node` on every host.
#
#   cluster.sh up     [--hosts 3] [--nics 4] [--rate 200mbit] [--delay 0] [--prefix shoal] [--no-nodes] [--mdns]
#   cluster.sh down   [--prefix shoal]
#   cluster.sh status [--prefix shoal]
#   cluster.sh node-up --host H [--prefix shoal]   (re-)starts host H's node on its data dir (after a crash or stop)
#
# Host h (1..H) is namespace <prefix>-h<h>; its NIC k (1..K) is eth<k> with address 198.18.<k>.<h>/24.
# NIC k of every host plugs into bridge br<k> of the switch namespace <prefix>-sw: one L2 network
# per NIC index. Each NIC's egress is shaped with tc (tbf at --rate, plus netem --delay ms when
# non-zero). `up` starts `shoal node` in each host listening on all its NICs; every node allows
# the others. State (peer ids, addresses, pids, logs) lives in /tmp/<prefix>-cluster.
# `down` removes every namespace and link with the prefix, also after a crash; both are idempotent.
# `node-up` starts the node of one host of a running cluster again, on the same data and shm dirs
# (it takes back its workloads), and gives it back its allow-list (every other host).
# Needs root and iproute2. Addresses come from 198.18.0.0/15 (reserved for benchmarks): no traffic
# leaves the machine.
set -euo pipefail

cmd=${1:-}; shift || true
HOSTS=3 NICS=4 RATE=200mbit DELAY=0 PREFIX=shoal NODES=1 MDNS= HOST=
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) HOSTS=$2; shift 2 ;;
    --nics) NICS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --delay) DELAY=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --no-nodes) NODES=0; shift ;;
    --mdns) MDNS=--mdns; shift ;;
    --host) HOST=$2; shift 2 ;;
    *) echo "cluster.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ "$HOSTS" =~ ^[0-9]+$ && "$HOSTS" -ge 1 && "$HOSTS" -le 250 ]] || { echo "cluster.sh: --hosts must be 1..250" >&2; exit 2; }
[[ "$NICS" =~ ^[0-9]+$ && "$NICS" -ge 1 && "$NICS" -le 250 ]] || { echo "cluster.sh: --nics must be 1..250" >&2; exit 2; }
[[ "$DELAY" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "cluster.sh: --delay must be milliseconds" >&2; exit 2; }
[[ "$PREFIX" =~ ^[a-z][a-z0-9]{0,7}$ ]] || { echo "cluster.sh: --prefix must be 1-8 lowercase letters/digits" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=/tmp/$PREFIX-cluster
SW=$PREFIX-sw

down() {
  for pidfile in "$STATE"/h*/pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$PREFIX-(h[0-9]+|sw)$" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  done
  sleep 0.3
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$PREFIX-(h[0-9]+|sw)$" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf "$STATE" /dev/shm/"$PREFIX"-h*
}

shape() { # ns dev
  if [ "$DELAY" != 0 ]; then
    ip netns exec "$1" tc qdisc replace dev "$2" root handle 1: netem delay "${DELAY}ms" limit 100000
    ip netns exec "$1" tc qdisc replace dev "$2" parent 1: handle 2: tbf rate "$RATE" burst 256kb latency 200ms
  else
    ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "$RATE" burst 256kb latency 200ms
  fi
}

# netem is a kernel option (CONFIG_NET_SCH_NETEM); some kernels (this project's CI VMs) lack it.
netem_available() {
  local probe=$PREFIX-probe
  ip link add "$probe" type veth peer name "$probe-b" 2>/dev/null || return 1
  local ok=0
  tc qdisc add dev "$probe" root netem delay 1ms 2>/dev/null || ok=1
  ip link del "$probe" 2>/dev/null || true
  return $ok
}

up() {
  if [ "$DELAY" != 0 ] && ! netem_available; then
    echo "cluster.sh: --delay needs the netem qdisc, which this kernel does not have (CONFIG_NET_SCH_NETEM)" >&2
    exit 3
  fi
  down
  mkdir -p "$STATE"
  ip netns add "$SW"
  ip -n "$SW" link set lo up
  for k in $(seq 1 "$NICS"); do
    ip -n "$SW" link add "br$k" type bridge
    ip -n "$SW" link set "br$k" up
  done
  for h in $(seq 1 "$HOSTS"); do
    ns=$PREFIX-h$h
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    for k in $(seq 1 "$NICS"); do
      ip link add "$PREFIX-$h-$k" type veth peer name "h${h}n$k"
      ip link set "$PREFIX-$h-$k" netns "$ns"
      ip link set "h${h}n$k" netns "$SW"
      ip -n "$ns" link set "$PREFIX-$h-$k" name "eth$k"
      ip -n "$ns" addr add "198.18.$k.$h/24" dev "eth$k"
      ip -n "$ns" link set "eth$k" up
      ip -n "$SW" link set "h${h}n$k" master "br$k"
      ip -n "$SW" link set "h${h}n$k" up
      shape "$ns" "eth$k"
    done
    # No default route in a host: give multicast (mDNS) a way out through NIC 1.
    ip -n "$ns" route add 224.0.0.0/4 dev eth1
  done
  echo "hosts=$HOSTS nics=$NICS rate=$RATE delay=${DELAY}ms${MDNS:+ mdns}" > "$STATE/params"
  [ "$NODES" = 1 ] && start_nodes
  status
}

start_node() { # h: starts host h's node in the background, records its pid
  local h=$1 dir=$STATE/h$1
  mkdir -p "$dir"
  ip netns exec "$PREFIX-h$h" node "$ROOT/packages/cli/dist/bin.js" node --data-dir "$dir/data" \
    --shm-dir "/dev/shm/$PREFIX-h$h" --listen /ip4/0.0.0.0/tcp/7000 $MDNS >"$dir/info" 2>>"$dir/log" &
  echo $! > "$dir/pid"
}

wait_node() { # h
  for _ in $(seq 1 100); do [ -s "$STATE/h$1/info" ] && break; sleep 0.1; done
  [ -s "$STATE/h$1/info" ] || { echo "cluster.sh: node on host $1 did not start; see $STATE/h$1/log" >&2; exit 1; }
}

# Host `only` (or every host, when empty) allows every other one.
allow_peers() { # only
  node -e '
    const fs = require("node:fs"); const http = require("node:http");
    const [state, hosts, only] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3] || 0)];
    const info = h => JSON.parse(fs.readFileSync(`${state}/h${h}/info`, "utf8"));
    const post = (sock, body) => new Promise((res, rej) => { const r = http.request({ socketPath: sock, method: "POST", path: "/allow" }, x => { x.resume(); x.statusCode === 200 ? res() : rej(new Error("allow failed")) }); r.on("error", rej); r.end(JSON.stringify(body)) });
    (async () => { for (let a = 1; a <= hosts; a++) for (let b = 1; b <= hosts; b++) if (a !== b && (only === 0 || a === only)) await post(`${state}/h${a}/data/control.sock`, { peerId: info(b).peerId }) })().catch(e => { console.error(e.message); process.exit(1) })
  ' "$STATE" "$HOSTS" "${1:-}"
}

start_nodes() {
  [ -f "$ROOT/packages/cli/dist/bin.js" ] || { echo "cluster.sh: build first (pnpm build)" >&2; exit 1; }
  for h in $(seq 1 "$HOSTS"); do start_node "$h"; done
  for h in $(seq 1 "$HOSTS"); do wait_node "$h"; done
  # Every node allows every other one.
  allow_peers
}

node_up() {
  [ -f "$STATE/params" ] || { echo "cluster.sh: no cluster with prefix $PREFIX" >&2; exit 1; }
  HOSTS=$(sed -n 's/^hosts=\([0-9]*\) .*/\1/p' "$STATE/params")
  [[ "$HOST" =~ ^[0-9]+$ && "$HOST" -ge 1 && "$HOST" -le "$HOSTS" ]] || { echo "cluster.sh: --host must be 1..$HOSTS" >&2; exit 2; }
  grep -q ' mdns' "$STATE/params" && MDNS=--mdns
  if [ -f "$STATE/h$HOST/pid" ] && kill -0 "$(cat "$STATE/h$HOST/pid")" 2>/dev/null \
    && ! grep -q '^Z' <(awk '{print $3}' "/proc/$(cat "$STATE/h$HOST/pid")/stat" 2>/dev/null); then
    echo "cluster.sh: the node on host $HOST still runs (pid $(cat "$STATE/h$HOST/pid"))" >&2; exit 1
  fi
  rm -f "$STATE/h$HOST/info"
  start_node "$HOST"
  wait_node "$HOST"
  allow_peers "$HOST"
}

status() {
  [ -d "$STATE" ] || { echo "no cluster with prefix $PREFIX"; return 0; }
  cat "$STATE/params"
  for d in "$STATE"/h*; do
    [ -d "$d" ] || continue
    h=${d##*/h}
    if [ -s "$d/info" ]; then
      node -e 'const i = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(`host ${process.argv[2]}: peer ${i.peerId}\n  ${i.addrs.filter(a => !a.includes("/127.")).join("\n  ")}`)' "$d/info" "$h"
    fi
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  node-up) node_up ;;
  *) echo "usage: cluster.sh up|down|status|node-up [options] (see the header of this script)" >&2; exit 2 ;;
esac
