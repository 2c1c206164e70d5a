// `pnpm bench hash`: what one core hashes per second here, for the two uses Shoal has: the
// verification region digests (16 KiB regions, XXH64 via xxhash-wasm since issue 11; SHA-256
// before) and content hashes of cache blocks (1 MiB, SHA-256, third-party content). Baseline:
// SHA-256 from node:crypto (OpenSSL, SHA-NI on this CPU), measured in the same run.
import { createHash } from 'node:crypto'
import xxhash from 'xxhash-wasm'
import { printTable, stats, writeResults } from './lib/harness.js'

const GiB = 2 ** 30
const total = Number(process.env.SHOAL_BENCH_BYTES ?? GiB / 2)
const reps = Number(process.env.SHOAL_BENCH_REPS ?? 3)
const api = await xxhash()
const data = Buffer.alloc(1 << 20)
for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24

const hashers = {
  'sha256 (node:crypto)': (b) => createHash('sha256').update(b).digest(),
  'xxh64 (xxhash-wasm)': (b) => api.h64Raw(b)
}

/** GB/s hashing `total` bytes in pieces of `size`. */
function rate (f, size) {
  const piece = data.subarray(0, size)
  const t = performance.now()
  for (let n = 0; n < total; n += size) f(piece)
  return total / ((performance.now() - t) / 1000) / 1e9
}

const rows = []
for (const size of [4096, 16384, 1 << 20]) {
  const base = stats(Array.from({ length: reps }, () => rate(hashers['sha256 (node:crypto)'], size))).median
  for (const [name, f] of Object.entries(hashers)) {
    const r = stats(Array.from({ length: reps }, () => rate(f, size)))
    rows.push({ hash: name, piece_bytes: size, GBps: +r.median.toFixed(2), GBps_min: +r.min.toFixed(2), GBps_max: +r.max.toFixed(2), cpu_s_per_GiB: +(GiB / 1e9 / r.median).toFixed(3), ratio_to_sha256: +(r.median / base).toFixed(2) })
  }
}
printTable(rows)
writeResults('hash', { setup: { bytes_per_case: total, reps, date: new Date().toISOString() }, cases: rows })
