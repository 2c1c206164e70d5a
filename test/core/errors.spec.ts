import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import * as core from '@shoal/core'
import * as workload from '@shoal/workload'
import { InvalidIdentityError } from '@shoal/libp2p'
import { QmpError } from '@shoal/driver-qemu'
import { createWorkerPool, ERROR_CODES, ERROR_TABLE, errorCode, exitCodeOf, fromErrorInfo, httpStatusOf, NoSpaceError, RemoteAbortError, ShoalError, toErrorInfo } from '@shoal/core'

const DOC = readFileSync(fileURLToPath(new URL('../../docs/ERRORS.md', import.meta.url)), 'utf8')

/** Every error class exported by core. */
const coreClasses = Object.values(core).filter((v): v is typeof ShoalError => typeof v === 'function' && (v === ShoalError || v.prototype instanceof ShoalError))

describe('one error model', () => {
  it('lists every code of ERROR_CODES in docs/ERRORS.md', () => {
    for (const code of ERROR_CODES) expect(DOC, code).toContain(`\`${code}\``)
    // And the docs list no code the table does not know.
    for (const [code] of DOC.matchAll(/ERR_[A-Z_]+/g)) expect(ERROR_CODES, code).toContain(code)
  })

  it('has a table entry (HTTP status, exit code) for the code of every error class of every package', () => {
    const classes: Array<{ code: string, name: string }> = [
      ...coreClasses, InvalidIdentityError, QmpError,
      workload.InvalidArgumentError, workload.ImageExistsError, workload.InvalidHeaderError, workload.ImageSizeMismatchError
    ]
    expect(coreClasses.length).toBeGreaterThan(25)
    for (const c of classes) {
      expect(ERROR_TABLE[c.code], `${c.name} ${c.code}`).toBeDefined()
      expect(httpStatusOf(c.code)).toBeGreaterThanOrEqual(400)
      expect(exitCodeOf(c.code)).toBeGreaterThan(0)
    }
    expect([httpStatusOf('ERR_INVALID_ARGUMENT'), exitCodeOf('ERR_INVALID_ARGUMENT')]).toEqual([400, 2])
    expect([httpStatusOf('ERR_NOPE'), exitCodeOf('ERR_NOPE')]).toEqual([500, 1])
  })

  it('gives every class a default message, its name and its code, and takes a cause', () => {
    for (const C of coreClasses) {
      // The base class takes (message, code, options); RemoteAbortError (remoteCode, message).
      if (C === RemoteAbortError || C === ShoalError) continue
      const cause = new Error('low level')
      const e = new (C as unknown as new (m?: string, o?: ErrorOptions) => ShoalError)(undefined, { cause })
      expect(e.message.length, C.name).toBeGreaterThan(0)
      expect(e.name).toBe(C.name)
      expect(e.code).toBe(C.code)
      expect(e.cause, C.name).toBe(cause)
    }
  })

  it('rebuilds an error from its code with its class, across any boundary', () => {
    const e = new NoSpaceError('need 2 GiB in /dev/shm, 1 GiB free')
    const back = fromErrorInfo(JSON.parse(JSON.stringify(toErrorInfo(e))) as core.ErrorInfo)
    expect(back).toBeInstanceOf(NoSpaceError)
    expect([back.code, back.message]).toEqual(['ERR_NO_SPACE', e.message])
    // Codes of packages that cannot extend ShoalError (the workload process) keep their code.
    expect(errorCode(new workload.InvalidHeaderError())).toBe('ERR_INVALID_HEADER')
    expect(errorCode(Object.assign(new Error('x'), { code: 'ENOENT' }))).toBe('ERR_INTERNAL')
    const unknown = fromErrorInfo({ code: 'ERR_FROM_THE_FUTURE', name: 'FutureError', message: 'm' })
    expect(unknown).toBeInstanceOf(ShoalError)
    expect([unknown.code, unknown.name]).toEqual(['ERR_FROM_THE_FUTURE', 'FutureError'])
  })

  it("a worker thread's failure comes back as a ShoalError with a code", async () => {
    const pool = createWorkerPool({ workers: 1 })
    try {
      const err = await pool.run({ op: 'digest', path: '/nonexistent/shoal-file', size: 4096, regionSize: 4096, start: 0, end: 1, out: new SharedArrayBuffer(64) }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ShoalError)
      expect((err as ShoalError).code).toMatch(/^ERR_/)
    } finally {
      await pool.stop()
    }
    await expect(pool.run({ op: 'digest' } as unknown as Parameters<typeof pool.run>[0])).rejects.toBeInstanceOf(core.AbortedError)
  })
})
