import type { FileHandle } from 'node:fs/promises'
import type { Bitmap } from '../bitmap.js'
import type { Chunk } from '../scheduler/chunk-scheduler.js'
import { Area } from '../wire/frames.js'
import type { Run } from '../wire/frames.js'

/** A batch of units of one area, read lazily when a lane takes it. */
export interface DataChunk extends Chunk {
  area: Area
  round: number
  runs: Run[]
  /** Bytes as read (and accepted by the tracker); kept so that a re-send sends the same bytes. */
  data?: Buffer
}

/** Largest gap (in bytes) between two runs that is read through rather than split into two reads. */
const COALESCE_GAP = 64 * 1024

/**
 * Cuts the dirty units of `bitmap` into chunks of about `chunkBytes`, in offset order, so that
 * every chunk is one or a few large sequential reads.
 */
export function planChunks (bitmap: Bitmap, area: Area, unitSize: number, chunkBytes: number, round: number, nextId: () => number): DataChunk[] {
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
  for (const run of bitmap.runs(maxUnits)) {
    if (units + run.count > maxUnits) flush()
    runs.push(run)
    units += run.count
  }
  flush()
  return chunks
}

/** Reads a chunk's units from the area file; nearby runs are read in one sequential read. */
export async function readChunk (fh: FileHandle, chunk: DataChunk, unitSize: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(chunk.bytes)
  let off = 0
  let i = 0
  while (i < chunk.runs.length) {
    // Extend a span over following runs while the gaps stay small.
    let j = i
    while (j + 1 < chunk.runs.length) {
      const a = chunk.runs[j]!
      const b = chunk.runs[j + 1]!
      if ((b.start - (a.start + a.count)) * unitSize > COALESCE_GAP) break
      j++
    }
    const first = chunk.runs[i]!
    const last = chunk.runs[j]!
    const spanBytes = (last.start + last.count - first.start) * unitSize
    if (i === j) {
      await readExactly(fh, out, off, spanBytes, first.start * unitSize)
      off += spanBytes
    } else {
      const span = Buffer.allocUnsafe(spanBytes)
      await readExactly(fh, span, 0, spanBytes, first.start * unitSize)
      for (let k = i; k <= j; k++) {
        const r = chunk.runs[k]!
        const from = (r.start - first.start) * unitSize
        off += span.copy(out, off, from, from + r.count * unitSize)
      }
    }
    i = j + 1
  }
  return out
}

async function readExactly (fh: FileHandle, buf: Buffer, off: number, len: number, pos: number): Promise<void> {
  let got = 0
  while (got < len) {
    const { bytesRead } = await fh.read(buf, off + got, len - got, pos + got)
    if (bytesRead === 0) { buf.fill(0, off + got, off + len); return }
    got += bytesRead
  }
}
