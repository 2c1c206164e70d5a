import { open } from 'node:fs/promises'
import { statSync } from 'node:fs'
import { AbortedError, TimeoutError } from '@shoal/core'
import { POLL_MS } from './constants.js'

/** Current size of a log file (0 when it does not exist yet). */
export function logSize (path: string): number {
  try { return statSync(path).size } catch { return 0 }
}

/**
 * Waits until a line containing `needle` is appended to the log at or after byte `from`;
 * resolves with that line. Rejects with {@link TimeoutError} after `timeoutMs`, or when
 * `gone` resolves first (the process writing the log exited).
 */
export async function waitForLine (path: string, from: number, needle: string, timeoutMs: number, opts: { gone?: Promise<unknown>, signal?: AbortSignal } = {}): Promise<string> {
  const deadline = Date.now() + timeoutMs
  let offset = from
  let partial = ''
  let ended = false
  void opts.gone?.then(() => { ended = true })
  for (;;) {
    if (opts.signal?.aborted === true) throw new AbortedError()
    const fh = await open(path, 'r').catch(() => undefined)
    if (fh != null) {
      try {
        const buf = Buffer.alloc(64 * 1024)
        for (;;) {
          const { bytesRead } = await fh.read(buf, 0, buf.length, offset)
          if (bytesRead === 0) break
          offset += bytesRead
          partial += buf.subarray(0, bytesRead).toString('latin1')
          const lines = partial.split('\n')
          partial = lines.pop()!
          const hit = lines.find(l => l.includes(needle))
          if (hit != null) return hit.replace(/\r$/, '')
        }
      } finally {
        await fh.close()
      }
    }
    if (ended) throw new TimeoutError(`the VM exited before ${JSON.stringify(needle)} appeared on its console`)
    if (Date.now() > deadline) throw new TimeoutError(`no ${JSON.stringify(needle)} on the console within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
}
