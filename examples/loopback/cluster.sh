#!/usr/bin/env bash
# A three-node cluster on loopback driven by the CLI, as a cluster script would drive real hosts:
# start nodes on 127.0.0.1/.2/.3, allow each other, create and start a workload on the first,
# migrate it live to the second, show both nodes' status, stop everything.
#   usage: examples/loopback/cluster.sh [memory=64M] [cache=256M] [rate=3000]
set -euo pipefail
cd "$(dirname "$0")/../.."
SHOAL="node packages/cli/dist/bin.js"
MEM=${1:-64M} CACHE=${2:-256M} RATE=${3:-3000}
WORK=$(mktemp -d /tmp/shoal-cluster-XXXXXX)
SHM=$(mktemp -d /dev/shm/shoal-cluster-XXXXXX)   # memory files live on tmpfs
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK" "$SHM"; }
trap cleanup EXIT

declare -A PEER ADDR
for i in 1 2 3; do
  mkfifo "$WORK/out$i"
  $SHOAL node --data-dir "$WORK/n$i" --shm-dir "$SHM/n$i" --listen "/ip4/127.0.0.$i/tcp/0" >"$WORK/out$i" 2>"$WORK/n$i.log" &
  PIDS+=($!)
  read -r line <"$WORK/out$i"
  PEER[$i]=$(node -e 'console.log(JSON.parse(process.argv[1]).peerId)' "$line")
  ADDR[$i]=$(node -e 'console.log(JSON.parse(process.argv[1]).addrs[0])' "$line")
  echo "node $i: ${ADDR[$i]}"
done
# Allow-lists: every node accepts migrations from the other two (through the control socket).
for i in 1 2 3; do for j in 1 2 3; do
  [ "$i" = "$j" ] || node -e '
    const http = require("node:http"); const [sock, id] = process.argv.slice(1);
    const r = http.request({ socketPath: sock, method: "POST", path: "/allow" }, res => process.exit(res.statusCode === 200 ? 0 : 1));
    r.end(JSON.stringify({ peerId: id }))' "$WORK/n$i/control.sock" "${PEER[$j]}"
done; done

$SHOAL image create vm1 --node "$WORK/n1" --memory "$MEM" --cache "$CACHE" --fill random --rate "$RATE" >/dev/null
$SHOAL image start vm1 --node "$WORK/n1" >/dev/null
sleep 1
$SHOAL migrate vm1 --node "$WORK/n1" --to "${ADDR[2]}"
echo; $SHOAL status --node "$WORK/n2"
