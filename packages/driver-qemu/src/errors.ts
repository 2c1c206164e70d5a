import { ShoalError } from '@shoal/core'

/** QEMU answered a QMP command with an error, or its QMP socket failed. */
export class QmpError extends ShoalError {
  static override readonly code = 'ERR_QMP'
  /** QMP's error class (e.g. `GenericError`, `CommandNotFound`), when QEMU sent one. */
  readonly qmpClass?: string
  constructor (message = 'QMP command failed', qmpClass?: string) {
    super(message)
    this.qmpClass = qmpClass
  }
}
