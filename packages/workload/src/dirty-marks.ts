import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs'
import { InvalidArgumentError } from './errors.js'

// The writer's side of Shoal's cooperative dirty tracking (format and contract: @shoal/core
// `tracker/dirty-marks.ts`): a 64-byte header (magic "SHDM", version 1, units, epoch, ack) and
// two bitmaps, one per epoch parity.
const MAGIC = 0x4d444853
const HEADER = 64
const EPOCH_AT = 12
const ACK_AT = 16

/** Marks written pages in a dirty-marks file, one batch at a time. */
export class DirtyMarksWriter {
  private readonly bytes: number
  private readonly local: Buffer
  private epoch = -1
  private acked = -1
  private readonly word = Buffer.alloc(4)

  constructor (private readonly fd: number, readonly units: number) {
    this.bytes = Math.ceil(units / 8)
    this.local = Buffer.alloc(this.bytes)
  }

  /** Opens a marks file for `units` pages or blocks; throws when it does not fit. */
  static open (path: string, units: number, option = '--marks'): DirtyMarksWriter {
    const fd = openSync(path, 'r+')
    const head = Buffer.alloc(HEADER)
    readSync(fd, head, 0, HEADER, 0)
    if (head.readUInt32LE(0) !== MAGIC || head.readUInt32LE(4) !== 1 || head.readUInt32LE(8) !== units || fstatSync(fd).size !== HEADER + 2 * Math.ceil(units / 8)) {
      closeSync(fd)
      throw new InvalidArgumentError(`${path} is not a dirty-marks file for ${units} units`, option)
    }
    return new DirtyMarksWriter(fd, units)
  }

  /** Starts a batch: reads the epoch (a new one starts from an empty bitmap). */
  begin (): void {
    readSync(this.fd, this.word, 0, 4, EPOCH_AT)
    const e = this.word.readUInt32LE(0)
    if (e !== this.epoch) {
      this.epoch = e
      this.local.fill(0)
    }
  }

  /** Marks a page before it is written (once per epoch). */
  mark (page: number): void {
    const byte = page >>> 3
    const bit = 1 << (page & 7)
    if ((this.local[byte]! & bit) !== 0) return
    this.local[byte]! |= bit
    writeSync(this.fd, this.local, byte, 1, HEADER + (this.epoch & 1) * this.bytes + byte)
  }

  /** Ends a batch: acknowledges its epoch. */
  end (): void {
    if (this.acked === this.epoch) return
    this.word.writeUInt32LE(this.epoch >>> 0, 0)
    writeSync(this.fd, this.word, 0, 4, ACK_AT)
    this.acked = this.epoch
  }

  close (): void { closeSync(this.fd) }
}
