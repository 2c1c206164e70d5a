import type { Bitmap } from '../bitmap.js'
import type { Chunk } from '../scheduler/chunk-scheduler.js'
import type { Area, Run } from '../wire/frames.js'

/** A batch of units of one area; its bytes are loaded when a lane first takes it. */
export interface DataChunk extends Chunk {
  area: Area
  round: number
  runs: Run[]
  /** Bytes of the runs, kept until acknowledged so that a re-send sends the same bytes. */
  parts?: Uint8Array[]
  /** Times the chunk went out (more than once when a lane failed with it in flight). */
  sends?: number
  /** Some send read its bytes from a load plan (on a data worker) instead of `parts`. */
  planned?: boolean
}

/**
 * Cuts the dirty units of `bitmap` into chunks of about `chunkBytes`, in offset order, so that
 * every chunk is one or a few large sequential reads.
 */
export function planChunks (bitmap: Bitmap, area: Area, unitSize: number, chunkBytes: number, round: number, nextId: () => number, from = 0, to = bitmap.size): DataChunk[] {
  const maxUnits = Math.max(1, Math.floor(chunkBytes / unitSize))
  const chunks: DataChunk[] = []
  let runs: Run[] = []
  let units = 0
  const flush = (): void => {
    if (runs.length === 0) return
    chunks.push({ id: nextId(), bytes: units * unitSize, area, round, runs })
    runs = []
    units = 0
  }
  for (const run of bitmap.runs(maxUnits, from, to)) {
    if (units + run.count > maxUnits) flush()
    runs.push(run)
    units += run.count
  }
  flush()
  return chunks
}
