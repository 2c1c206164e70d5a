/**
 * The workload's randomness: a counter-based hash rather than a stateful generator, so that
 * the page of write n is a pure function of (seed, n). That lets the writer resume at any n
 * and the verifier replay or jump to any write without replaying a generator's state.
 *
 * Everything is 32-bit integer arithmetic (`Math.imul`), which V8 keeps in registers; BigInt
 * would be two orders of magnitude slower and the verifier replays millions of writes.
 */

const TWO_POW_32 = 4294967296

/**
 * A bijective 32-bit mixer with strong avalanche (Wellons' "lowbias32"), so consecutive
 * counters give unrelated outputs.
 */
export function mix32 (x: number): number {
  x ^= x >>> 16
  x = Math.imul(x, 0x21f0aaad)
  x ^= x >>> 15
  x = Math.imul(x, 0x735a2d97)
  x ^= x >>> 15
  return x >>> 0
}

/** Independent 32-bit keys derived from the 64-bit seed, one per use. */
export interface SeedKeys {
  /** Keys the hot/cold draw of `pick`. */
  readonly pick: number
  /** Keys the page-index draw of `pick`. */
  readonly index: number
  /** Keys the fill bytes of data pages. */
  readonly page: number
  /** Keys the payload bytes of records. */
  readonly record: number
}

/** Derives the per-use keys of a 64-bit seed. */
export function seedKeys (seed: bigint): SeedKeys {
  const lo = Number(BigInt.asUintN(32, seed))
  const hi = Number(BigInt.asUintN(32, seed >> 32n))
  const base = mix32(lo ^ mix32(hi ^ 0x5eed5eed))
  return {
    pick: mix32(base ^ 0x0a11ce00),
    index: mix32(base ^ 0x1de7e500),
    page: mix32(base ^ 0x9a9e0000),
    record: mix32(base ^ 0x4ec04d00)
  }
}

/** Parameters of the page picker (all from the header). */
export interface PickerInit {
  /** The image seed. */
  readonly seed: bigint
  /** Pages in the memory image, header page included. */
  readonly pageCount: number
  /** Size of the hot set `[1, 1 + hotPages)`; 0 makes every write uniform. */
  readonly hotPages: number
  /** Percentage (0..100) of writes that go to the hot set. */
  readonly hotPercent: number
}

/** Maps a 1-based write number to the data page it writes. */
export type Picker = (n: number) => number

/**
 * Creates the deterministic page picker: with probability `hotPercent`% write n lands in the
 * hot set, otherwise uniformly on any data page `[1, pageCount)`.
 */
export function createPicker (init: PickerInit): Picker {
  const keys = seedKeys(init.seed)
  const dataPages = init.pageCount - 1
  const hotPages = Math.min(init.hotPages, dataPages)
  // Comparing the raw 32-bit draw against a threshold avoids a modulo in the hot loop.
  const hotThreshold = hotPages > 0 ? Math.floor(init.hotPercent / 100 * TWO_POW_32) : 0
  const hotScale = hotPages / TWO_POW_32
  const coldScale = dataPages / TWO_POW_32
  // The high word of n changes once per 2^32 writes: cache its mix.
  let cachedHi = 0
  let hiKey = mix32(keys.pick)

  return (n: number): number => {
    const hi = (n / TWO_POW_32) >>> 0
    if (hi !== cachedHi) {
      cachedHi = hi
      hiKey = mix32(hi ^ keys.pick)
    }
    const draw = mix32((n >>> 0) ^ hiKey)
    const index = mix32(draw ^ keys.index)
    return draw < hotThreshold
      ? 1 + Math.floor(index * hotScale)
      : 1 + Math.floor(index * coldScale)
  }
}

/**
 * Writes 32 pseudo-random bytes determined by (key, a, n) into `out`; the fill of a page or
 * record is this pattern repeated, which is cheap to produce and to check yet differs for
 * every write.
 */
export function fillPattern (key: number, a: number, n: number, out: Buffer): Buffer {
  let h = mix32(key ^ mix32(a ^ mix32((n / TWO_POW_32) >>> 0) ^ mix32(n >>> 0)))
  for (let offset = 0; offset < 32; offset += 4) {
    h = mix32(h + 0x9e3779b9)
    out.writeUInt32LE(h, offset)
  }
  return out
}
