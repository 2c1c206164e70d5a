// Set-up steps of `pnpm bench postcopy` on a network-namespace cluster (bench/lib/netns.js):
// a random volume file with its block hashes, one replica store shared by hard links between
// hosts, per-host uplink shaping, wire byte counters, and the destination-side checks.
import { execFileSync } from 'node:child_process'
import { createHash, randomFillSync } from 'node:crypto'
import { closeSync, existsSync, linkSync, mkdirSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const MiB = 2 ** 20
const CLUSTER = fileURLToPath(new URL('../../examples/netns-cluster/cluster.sh', import.meta.url))
/** The files of one volume's replica store (packages/core/src/volume/block-store.ts). */
const STORE_EXTS = ['meta', 'hashes', 'have', 'blocks']

export const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

/** '16G', '256M', '512K' or plain bytes; binary units. */
export function parseBytes (s, what) {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)i?B?$/i.exec(String(s).trim())
  if (m == null) throw new Error(`${what}: a byte size such as 16G, 256M or 1048576, got ${JSON.stringify(s)}`)
  const mult = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2].toUpperCase()]
  return Math.round(Number(m[1]) * mult)
}

/**
 * Writes `size` random bytes to `path` (sequentially, 64 MiB at a time) and returns the SHA-256
 * of every `blockSize` block, computed here from the bytes written: the reference the
 * destination's cache is checked against, independent of Shoal's own hashing.
 */
export function writeRandomVolume (path, size, blockSize) {
  if (size % blockSize !== 0) throw new Error(`volume size ${size} is not a multiple of the block size ${blockSize}`)
  const hashes = Buffer.alloc(size / blockSize * 32)
  const per = Math.max(1, Math.floor(64 * MiB / blockSize)) * blockSize
  const buf = Buffer.allocUnsafe(per)
  const fd = openSync(path, 'w')
  try {
    for (let off = 0; off < size; off += per) {
      const n = Math.min(per, size - off)
      randomFillSync(buf, 0, n)
      writeSync(fd, buf, 0, n, off)
      for (let b = 0; b < n; b += blockSize) createHash('sha256').update(buf.subarray(b, b + blockSize)).digest().copy(hashes, (off + b) / blockSize * 32)
    }
  } finally { closeSync(fd) }
  return hashes
}

/** Whether a process exists and is not a zombie. */
export function alive (pid) {
  try { process.kill(pid, 0) } catch { return false }
  try { return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z' } catch { return false }
}

/** SIGTERM to `pid`, then waits until it is gone (SIGKILL after `ms`). */
export async function terminate (pid, ms = 30_000) {
  try { process.kill(pid, 'SIGTERM') } catch { return }
  const end = Date.now() + ms
  while (alive(pid)) {
    if (Date.now() > end) { try { process.kill(pid, 'SIGKILL') } catch {} ; await sleep(200); break }
    await sleep(50)
  }
}

/**
 * Gives host `h` the replica store of volume `id` that host `from` holds, without copying it:
 * stops h's node, hard-links `<data>/volumes/<id>.*` of `from` into h's data dir and starts the
 * node again with `cluster.sh node-up` (volumes are loaded at start; node-up restores the
 * node's allow-list). The store is only read by replicas (its held-blocks bitmap is rewritten
 * by rename, which would only break the link), so sharing the inode is safe.
 */
export async function linkStore (c, prefix, from, h, id) {
  await terminate(c.pid(h))
  const src = join(`/tmp/${prefix}-cluster/h${from}/data/volumes`)
  const dst = join(`/tmp/${prefix}-cluster/h${h}/data/volumes`)
  mkdirSync(dst, { recursive: true })
  for (const ext of STORE_EXTS) {
    const f = `${id}.${ext}`
    if (!existsSync(join(src, f))) throw new Error(`host ${from} has no ${f} in ${src}`)
    rmSync(join(dst, f), { force: true })
    linkSync(join(src, f), join(dst, f))
  }
  execFileSync('bash', [CLUSTER, 'node-up', '--host', String(h), '--prefix', prefix], { stdio: ['ignore', 'ignore', 'inherit'] })
}

/** Re-shapes every NIC of a host (tbf on egress), e.g. to split one uplink over its NICs. */
export function shapeHost (ns, nics, rate) {
  for (let k = 1; k <= nics; k++) execFileSync('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'replace', 'dev', `eth${k}`, 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '200ms'])
}

/** Bytes sent so far over every NIC of a namespace. */
export function txBytes (ns) {
  const out = execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', 'cat /sys/class/net/eth*/statistics/tx_bytes'], { encoding: 'utf8' })
  return out.trim().split('\n').reduce((a, b) => a + Number(b), 0)
}

/** Busy and total CPU jiffies of the whole machine (all cores), from /proc/stat. */
export function machineCpu () {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const idle = f[3] + f[4] // idle + iowait
  return { busy: f.reduce((a, b) => a + b, 0) - idle, total: f.reduce((a, b) => a + b, 0) }
}

/** Polls `f` every `every` ms until it returns a value other than undefined, for at most `ms`. */
export async function until (f, ms, what, every = 250) {
  const end = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`)
    await sleep(every)
  }
}

/**
 * Blocks [first, blockCount) of a cache file whose SHA-256 differs from `hashes` (32 bytes per
 * block): their indexes (at most `limit`) and how many were compared.
 */
export function compareBlocks (cachePath, blockSize, hashes, first, limit = 16) {
  const blockCount = hashes.byteLength / 32
  const per = Math.max(1, Math.floor(64 * MiB / blockSize))
  const buf = Buffer.allocUnsafe(per * blockSize)
  const bad = []
  let badCount = 0
  const fd = openSync(cachePath, 'r')
  try {
    for (let i = first; i < blockCount; i += per) {
      const n = Math.min(per, blockCount - i)
      let got = 0
      while (got < n * blockSize) {
        const r = readSync(fd, buf, got, n * blockSize - got, i * blockSize + got)
        if (r === 0) break
        got += r
      }
      buf.fill(0, got, n * blockSize) // a short file reads as zeros, which will not match
      for (let k = 0; k < n; k++) {
        const h = createHash('sha256').update(buf.subarray(k * blockSize, (k + 1) * blockSize)).digest()
        if (!h.equals(hashes.subarray((i + k) * 32, (i + k + 1) * 32))) { badCount++; if (bad.length < limit) bad.push(i + k) }
      }
    }
  } finally { closeSync(fd) }
  return { compared: Math.max(0, blockCount - first), bad: badCount, firstBad: bad }
}
