/**
 * Shadow copies (shared memory) kept from finished migrations for the next one of the same size.
 * A fresh shadow costs a page fault per page the first time a scan writes it (measured ~0.5 CPU-s
 * per GiB of kernel time on the source); a long-lived node that migrates image after image (a
 * host being drained) reuses them instead. A returned shadow is zeroed where it may hold data,
 * so it is handed out exactly as a fresh one (all zeros: what a new destination holds).
 */
export interface ShadowPool {
  /** A zero-filled shared buffer of `size` bytes: a kept one if there is one, else a new one. */
  acquire: (size: number) => SharedArrayBuffer
  /**
   * Gives a shadow back. `nonzero` (one bit per `unitSize` unit) says which units may hold data;
   * without it the whole buffer is zeroed.
   */
  release: (shadow: SharedArrayBuffer, nonzero?: { bits: SharedArrayBuffer, unitSize: number }) => void
  /** Bytes kept for reuse now. */
  readonly keptBytes: number
}

/** Options of {@link createShadowPool}. */
export interface ShadowPoolInit {
  /** Most bytes kept at once (larger shadows are not kept). */
  maxBytes: number
  /** A kept shadow not reused for this long is let go (default 60 s). */
  idleMs?: number
}

/** Zeroes at most this much at once between checks of the bitmap (a run of set bits). */
const ZERO_STEP = 64 * 1024 * 1024

/** A pool of shadow buffers bounded by `maxBytes`; unused ones are dropped after `idleMs`. */
export function createShadowPool (init: ShadowPoolInit): ShadowPool {
  const kept = new Map<SharedArrayBuffer, NodeJS.Timeout>()
  let keptBytes = 0
  const drop = (sab: SharedArrayBuffer): void => {
    const t = kept.get(sab)
    if (t == null) return
    clearTimeout(t)
    kept.delete(sab)
    keptBytes -= sab.byteLength
  }
  return {
    get keptBytes () { return keptBytes },
    acquire (size) {
      for (const sab of kept.keys()) {
        if (sab.byteLength !== Math.max(1, size)) continue
        drop(sab)
        return sab
      }
      return new SharedArrayBuffer(Math.max(1, size))
    },
    release (sab, nonzero) {
      if (kept.has(sab) || sab.byteLength > init.maxBytes) return
      // Make room: the oldest kept shadows go first.
      for (const old of kept.keys()) {
        if (keptBytes + sab.byteLength <= init.maxBytes) break
        drop(old)
      }
      if (keptBytes + sab.byteLength > init.maxBytes) return
      zero(sab, nonzero)
      const timer = setTimeout(() => { drop(sab) }, init.idleMs ?? 60_000)
      timer.unref()
      kept.set(sab, timer)
      keptBytes += sab.byteLength
    }
  }
}

/** Zeroes the units of `sab` whose bit is set in `nonzero` (all of it without a bitmap). */
function zero (sab: SharedArrayBuffer, nonzero?: { bits: SharedArrayBuffer, unitSize: number }): void {
  const view = new Uint8Array(sab)
  if (nonzero == null) { view.fill(0); return }
  const bits = new Uint8Array(nonzero.bits)
  const units = Math.ceil(sab.byteLength / nonzero.unitSize)
  let u = 0
  while (u < units) {
    // Whole zero bytes of the bitmap are 8 untouched units at once.
    if ((u & 7) === 0 && bits[u >>> 3] === 0) { u += 8; continue }
    if ((bits[u >>> 3]! & (1 << (u & 7))) === 0) { u++; continue }
    let e = u + 1
    while (e < units && (bits[e >>> 3]! & (1 << (e & 7))) !== 0 && (e - u) * nonzero.unitSize < ZERO_STEP) e++
    view.fill(0, u * nonzero.unitSize, Math.min(sab.byteLength, e * nonzero.unitSize))
    u = e
  }
}
