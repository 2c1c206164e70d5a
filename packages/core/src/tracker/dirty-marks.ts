import { closeSync, existsSync, fstatSync, openSync, readSync, writeSync } from 'node:fs'
import { InvalidArgumentError } from '../errors.js'

/**
 * The shared dirty-marks file of the cooperative tracker (a small file on tmpfs that the
 * workload and Shoal both read and write with positional I/O). Layout, little-endian:
 *
 * | offset | field | written by |
 * |---|---|---|
 * | 0 | magic `SHDM` (u32) | creator |
 * | 4 | version = 1 (u32) | creator |
 * | 8 | units (u32) | creator |
 * | 12 | epoch (u32) | Shoal |
 * | 16 | ack (u32): the epoch of the writer's last finished batch | workload |
 * | 64 | bitmap 0 (⌈units/8⌉ bytes) | workload (epoch even), Shoal clears it |
 * | 64 + ⌈units/8⌉ | bitmap 1 | workload (epoch odd), Shoal clears it |
 *
 * The writer's contract, per batch of writes: read the epoch; mark each unit in the epoch's
 * bitmap *before* writing it; when the batch is done, write the epoch into `ack`. Shoal flips the
 * epoch, waits until `ack` shows the new one (every batch under the old epoch has finished), then
 * reads and clears the old bitmap. A unit written after the flip is marked in the new bitmap, so
 * no write is lost between rounds; a writer stopped mid-batch (SIGSTOP) has already marked the
 * units it was about to write, and the final round reads both bitmaps.
 * `@shoal/workload` implements the writer side.
 */
export const MARKS_MAGIC = 0x4d444853
export const MARKS_HEADER_BYTES = 64
const EPOCH_AT = 12
const ACK_AT = 16

/** An open dirty-marks file (Shoal's side). */
export class DirtyMarks {
  private readonly bytes: number

  private constructor (private readonly fd: number, readonly units: number) {
    this.bytes = Math.ceil(units / 8)
  }

  /** Creates (or resets) the marks file for `units` units: epoch 0, no marks. */
  static create (path: string, units: number): void {
    if (!Number.isInteger(units) || units < 0 || units > 0xffffffff) throw new InvalidArgumentError(`bad unit count ${units}`)
    const head = Buffer.alloc(MARKS_HEADER_BYTES)
    head.writeUInt32LE(MARKS_MAGIC, 0)
    head.writeUInt32LE(1, 4)
    head.writeUInt32LE(units, 8)
    const fd = openSync(path, 'w')
    try {
      writeSync(fd, head, 0, head.byteLength, 0)
      const zeros = Buffer.alloc(2 * Math.ceil(units / 8))
      writeSync(fd, zeros, 0, zeros.byteLength, MARKS_HEADER_BYTES)
    } finally {
      closeSync(fd)
    }
  }

  /** Opens a marks file, creating it when missing; checks that it covers `units` units. */
  static open (path: string, units: number): DirtyMarks {
    if (!existsSync(path)) DirtyMarks.create(path, units)
    const fd = openSync(path, 'r+')
    const head = Buffer.alloc(MARKS_HEADER_BYTES)
    readSync(fd, head, 0, head.byteLength, 0)
    const ok = head.readUInt32LE(0) === MARKS_MAGIC && head.readUInt32LE(4) === 1 && head.readUInt32LE(8) === units &&
      fstatSync(fd).size === MARKS_HEADER_BYTES + 2 * Math.ceil(units / 8)
    if (!ok) {
      closeSync(fd)
      throw new InvalidArgumentError(`${path} is not a dirty-marks file for ${units} units`)
    }
    return new DirtyMarks(fd, units)
  }

  get epoch (): number { return this.readU32(EPOCH_AT) }
  get ack (): number { return this.readU32(ACK_AT) }

  /** Moves the writer to the next epoch (and its bitmap); returns the new epoch. */
  flip (): number {
    const next = (this.epoch + 1) >>> 0
    const b = Buffer.alloc(4)
    b.writeUInt32LE(next)
    writeSync(this.fd, b, 0, 4, EPOCH_AT)
    return next
  }

  /** Reads the bitmap of `epoch` into `into` (OR) and clears it on disk. */
  take (epoch: number, into: Uint8Array): void {
    const at = MARKS_HEADER_BYTES + (epoch & 1) * this.bytes
    const buf = Buffer.alloc(this.bytes)
    readSync(this.fd, buf, 0, this.bytes, at)
    for (let i = 0; i < this.bytes; i++) into[i]! |= buf[i]!
    writeSync(this.fd, Buffer.alloc(this.bytes), 0, this.bytes, at)
  }

  close (): void { closeSync(this.fd) }

  private readU32 (at: number): number {
    const b = Buffer.alloc(4)
    readSync(this.fd, b, 0, 4, at)
    return b.readUInt32LE(0)
  }
}
