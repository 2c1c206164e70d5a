// A small seeded PRNG (sfc32) so that a fuzz run is reproducible from its seed.

/** Creates a generator from a 32-bit seed; every method draws from the same stream. */
export function createPrng (seed) {
  let a = 0x9e3779b9 ^ seed; let b = 0x243f6a88; let c = 0xb7e15162; let d = seed >>> 0
  const next = () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0
    let t = (a + b) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    d = (d + 1) | 0
    t = (t + d) | 0
    c = (c + t) | 0
    return (t >>> 0) / 4294967296
  }
  for (let i = 0; i < 16; i++) next()
  const rng = {
    /** Uniform in [0, 1). */
    float: next,
    /** Integer in [0, n). */
    int: (n) => Math.floor(next() * n),
    /** Integer in [lo, hi]. */
    range: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    /** True with probability p. */
    chance: (p) => next() < p,
    pick: (xs) => xs[Math.floor(next() * xs.length)],
    /** Picks from [[weight, value], ...]. */
    weighted: (pairs) => {
      const total = pairs.reduce((n, [w]) => n + w, 0)
      let x = next() * total
      for (const [w, v] of pairs) { if ((x -= w) < 0) return v }
      return pairs[pairs.length - 1][1]
    },
    u32: () => (next() * 4294967296) >>> 0,
    bytes: (n) => {
      const b = Buffer.allocUnsafe(n)
      for (let i = 0; i < n; i++) b[i] = (next() * 256) | 0
      return b
    },
    /** A derived generator (e.g. one per worker), still determined by the seed. */
    fork: () => createPrng((next() * 4294967296) >>> 0)
  }
  return rng
}
