// Tries bench/lib/qemu-native.js: one small case of QEMU's own live migration (RAM + NBD disk
// mirror, as libvirt's --copy-storage-all) per variant, plain and multifd (4 channels), between two
// hosts of a netns cluster (2 hosts, 4 NICs, 200 Mbit/s each; QEMU uses one link). Each variant runs
// as is and with `tcgDirtyWorkaround` (QEMU 7.2's TCG dirty-tracking bug, see lib/qemu-native.js).
// Needs root.
//   node bench/qemu-native-try.js [--mem-mib 256] [--cache-mib 256] [--rate 2000] [--records 20]
//                                 [--only qemu|qemu-multifd] [--workaround off|on|both]
import { closeSync, openSync, writeSync } from 'node:fs'
import { randomFillSync } from 'node:crypto'
import { buildTestGuest } from '@shoal/driver-qemu'
import { clusterUp } from './lib/netns.js'
import { tempDir } from './lib/harness.js'
import { runQemuNative } from './lib/qemu-native.js'

const arg = (name, dflt) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : dflt }
const MiB = 1024 * 1024
const memorySize = Number(arg('mem-mib', 256)) * MiB
const cacheSize = Number(arg('cache-mib', 256)) * MiB
const guestSettings = { rate: Number(arg('rate', 2000)), records: Number(arg('records', 20)) }
const only = arg('only')
const workaround = arg('workaround', 'both')

/** Random content, 4 MiB at a time. */
function randomDisk (path) {
  const fd = openSync(path, 'r+')
  const buf = Buffer.alloc(4 * MiB)
  try {
    for (let off = 0; off < cacheSize; off += buf.length) writeSync(fd, randomFillSync(buf), 0, Math.min(buf.length, cacheSize - off), off)
  } finally { closeSync(fd) }
}

const guest = await buildTestGuest({ log: l => console.error(l) })
const cluster = clusterUp('sbn', ['--hosts', '2', '--nics', '4', '--rate', '200mbit', '--no-nodes'])
const results = []
try {
  const workDir = tempDir('qn').replace(/\/$/, '')
  const modes = workaround === 'both' ? [false, true] : [workaround === 'on']
  for (const multifd of [false, true]) for (const tcgDirtyWorkaround of modes) {
    if (only != null && only !== (multifd ? 'qemu-multifd' : 'qemu')) continue
    const r = await runQemuNative({
      srcNs: cluster.ns(1),
      dstNs: cluster.ns(2),
      dstAddr: '198.18.1.2',
      guest,
      memorySize,
      cacheSize,
      cacheInit: randomDisk,
      guestSettings,
      multifd,
      workDir,
      settleMs: 2000,
      tcgDirtyWorkaround,
      log: l => console.log(`  ${l}`)
    })
    console.log(JSON.stringify(r, null, 2))
    results.push(r)
  }
} finally {
  cluster.down()
}
console.log('\ntool          workaround  total_s  downtime_ms  measured_ms  wire_MB  back_MB  guest_ok  error')
for (const r of results) {
  console.log([r.tool.padEnd(13), String(r.tcg_dirty_workaround).padStart(10), String(r.total_s?.toFixed(1)).padStart(7), String(r.downtime_ms).padStart(11), String(r.downtime_measured_ms).padStart(11),
    String((r.wire_bytes / 1e6).toFixed(1)).padStart(8), String((r.wire_bytes_back / 1e6).toFixed(2)).padStart(8), String(r.guest_ok).padStart(8), r.error ?? ''].join('  '))
}
