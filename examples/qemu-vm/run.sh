#!/usr/bin/env bash
# A live QEMU VM moved by Shoal across the network-namespace cluster and back, while its guest
# keeps dirtying RAM and writing records to its cache disk and prints its progress.
#
#   examples/qemu-vm/run.sh [--memory 256M] [--cache 512M] [--rate 2000] [--records 20] [--keep]
#
# Needs root (namespaces), a built checkout (pnpm install && pnpm build) and QEMU (installed here
# with apt-get when missing). Builds the test guest on first use. Without --keep, the cluster
# (namespaces, nodes, VMs, files) is removed at the end, also on failure or Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MEMORY=256M CACHE=512M RATE=2000 RECORDS=20 KEEP=0 PREFIX=qvm
while [ $# -gt 0 ]; do
  case "$1" in
    --memory) MEMORY=$2; shift 2 ;;
    --cache) CACHE=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --records) RECORDS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 2; }
[ -f "$ROOT/packages/cli/dist/bin.js" ] || { echo "run.sh: build first: pnpm install && pnpm build" >&2; exit 2; }
if ! command -v qemu-system-x86_64 >/dev/null; then
  echo "installing QEMU ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 qemu-utils >/dev/null
fi

shoal() { node "$ROOT/packages/cli/dist/bin.js" "$@"; }
CLUSTER="$ROOT/examples/netns-cluster/cluster.sh"
STATE=/tmp/$PREFIX-cluster
H1=$STATE/h1/data H2=$STATE/h2/data
WATCH=
cleanup() {
  [ -n "$WATCH" ] && kill "$WATCH" 2>/dev/null || true
  if [ "$KEEP" = 0 ]; then bash "$CLUSTER" down --prefix "$PREFIX"; else echo "kept: $STATE (remove with: $CLUSTER down --prefix $PREFIX)"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== cluster: 2 hosts x 4 NICs at 200 Mbit/s, a shoal node on each"
bash "$CLUSTER" up --prefix "$PREFIX" --hosts 2 --nics 4 --rate 200mbit
# Each host's address on NIC 1 (the migration learns the others through identify).
addr() { node -e 'const i=JSON.parse(require("fs").readFileSync(process.argv[1]));console.log(i.addrs.find(a=>a.includes(`/198.18.1.${process.argv[2]}/`)))' "$STATE/h$1/info" "$1"; }
PEER1=$(addr 1) PEER2=$(addr 2)

echo "== VM vm1 on host 1: $MEMORY RAM, a $CACHE cache disk, the test guest dirtying $RATE pages/s and writing $RECORDS records/s"
shoal image create vm1 --node "$H1" --driver qemu --test-guest --memory "$MEMORY" --cache "$CACHE" --rate "$RATE" --record-rate "$RECORDS" --accel tcg >/dev/null
shoal image start vm1 --node "$H1" >/dev/null

# Print the guest's heartbeat once a second, from whichever host runs it now.
watch_guest() {
  while sleep 1; do
    for h in 1 2; do
      dir=$(shoal status --node "$STATE/h$h/data" --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{const i=JSON.parse(s).images.find(i=>i.spec.name==="vm1"&&i.state==="running");if(i)console.log(i.runtime.runDir)}catch{}})')
      if [ -n "$dir" ]; then echo "   [guest on host $h] $(grep -a 'SHOAL-HB' "$dir/serial.log" | tail -1 | tr -d '\r')"; break; fi
    done
  done
}
watch_guest & WATCH=$!
sleep 3
shoal image check vm1 --node "$H1"

echo "== migrate vm1 live: host 1 -> host 2 (4 lanes, one per NIC)"
shoal migrate vm1 --node "$H1" --to "$PEER2"
shoal image check vm1 --node "$H2"
sleep 3
echo "== and back: host 2 -> host 1"
shoal migrate vm1 --node "$H2" --to "$PEER1"
shoal image check vm1 --node "$H1"
sleep 2
kill "$WATCH" 2>/dev/null || true; WATCH=
echo "== done: the guest ran throughout and its own check of every RAM stamp and disk record passed on each host"
