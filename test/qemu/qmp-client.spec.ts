// Unit tests of the QMP client against a scripted QMP server on a unix socket (a mock of QEMU's
// monitor: the end-to-end suites talk to real QEMU).
import { createServer } from 'node:net'
import type { Server, Socket } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { QmpClient, QmpError } from '@shoal/driver-qemu'
import { TimeoutError } from '@shoal/core'
import { tempDir } from '../fixtures/temp.js'

const cleanups: Array<() => unknown> = []
afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

type Handler = (cmd: { execute: string, arguments?: Record<string, unknown>, id?: number }, sock: Socket) => void

async function fakeQemu (handler: Handler, greeting: unknown = { QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 } }, capabilities: [] } }): Promise<{ path: string, server: Server, seen: string[] }> {
  const dir = tempDir('qmp')
  const path = join(dir.path, 'qmp.sock')
  const seen: string[] = []
  const server = createServer((sock) => {
    sock.write(JSON.stringify(greeting) + '\r\n')
    let buf = ''
    sock.on('data', (d) => {
      buf += d.toString()
      let nl
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string, id?: number }
        buf = buf.slice(nl + 1)
        seen.push(cmd.execute)
        if (cmd.execute === 'qmp_capabilities') sock.write(JSON.stringify({ return: {}, id: cmd.id }) + '\r\n')
        else handler(cmd, sock)
      }
    })
  })
  await new Promise<void>(resolve => server.listen(path, resolve))
  cleanups.push(async () => { server.close(); dir.cleanup() })
  return { path, server, seen }
}

describe('QmpClient', () => {
  it('negotiates capabilities, runs commands with arguments and matches answers by id', async () => {
    const q = await fakeQemu((cmd, sock) => {
      // Answer out of order: the second command first.
      if (cmd.execute === 'slow') setTimeout(() => sock.write(JSON.stringify({ return: { n: 1 }, id: cmd.id }) + '\r\n'), 30)
      else sock.write(JSON.stringify({ return: { echo: cmd.arguments }, id: cmd.id }) + '\r\n')
    })
    const qmp = await QmpClient.connect(q.path)
    cleanups.push(() => { qmp.close() })
    expect(qmp.version).toBe('7.2.22')
    const [a, b] = await Promise.all([qmp.execute('slow'), qmp.execute('echo', { x: 1 })])
    expect(a).toEqual({ n: 1 })
    expect(b).toEqual({ echo: { x: 1 } })
    expect(q.seen).toEqual(['qmp_capabilities', 'slow', 'echo'])
  })

  it('turns a QMP error into a QmpError with its class and description', async () => {
    const q = await fakeQemu((cmd, sock) => { sock.write(JSON.stringify({ error: { class: 'CommandNotFound', desc: `The command ${cmd.execute} has not been found` }, id: cmd.id }) + '\r\n') })
    const qmp = await QmpClient.connect(q.path)
    cleanups.push(() => { qmp.close() })
    const err = await qmp.execute('nope').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(QmpError)
    expect((err as QmpError).qmpClass).toBe('CommandNotFound')
    expect((err as QmpError).code).toBe('ERR_QMP')
    expect((err as QmpError).message).toContain('nope')
  })

  it('delivers events between answers', async () => {
    const q = await fakeQemu((cmd, sock) => {
      sock.write(JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 } }) + '\r\n')
      sock.write(JSON.stringify({ return: {}, id: cmd.id }) + '\r\n')
    })
    const qmp = await QmpClient.connect(q.path)
    cleanups.push(() => { qmp.close() })
    const events: string[] = []
    qmp.onEvent(e => events.push(e.event))
    await qmp.execute('stop')
    expect(events).toEqual(['STOP'])
  })

  it('rejects pending commands when QEMU goes away, and later commands at once', async () => {
    const q = await fakeQemu((_cmd, sock) => { sock.destroy() })
    const qmp = await QmpClient.connect(q.path)
    await expect(qmp.execute('quit')).rejects.toBeInstanceOf(QmpError)
    await qmp.closed
    await expect(qmp.execute('query-status')).rejects.toBeInstanceOf(QmpError)
  })

  it('rejects a line that is not JSON and closes', async () => {
    const q = await fakeQemu((_cmd, sock) => { sock.write('garbage{\r\n') })
    const qmp = await QmpClient.connect(q.path)
    await expect(qmp.execute('query-status')).rejects.toThrow(/not JSON/)
  })

  it('times out a command QEMU never answers', async () => {
    const q = await fakeQemu(() => {})
    const qmp = await QmpClient.connect(q.path, { commandTimeoutMs: 50 })
    cleanups.push(() => { qmp.close() })
    await expect(qmp.execute('query-status')).rejects.toBeInstanceOf(TimeoutError)
  })

  it('waits for a socket that appears late, and gives up on one that never does', async () => {
    const dir = tempDir('qmp')
    cleanups.push(dir.cleanup)
    await expect(QmpClient.connect(join(dir.path, 'never.sock'), { timeoutMs: 100 })).rejects.toBeInstanceOf(TimeoutError)
    const later = join(dir.path, 'late.sock')
    const connecting = QmpClient.connect(later, { timeoutMs: 5000 })
    await new Promise(resolve => setTimeout(resolve, 100))
    const server = createServer((sock) => {
      sock.write(JSON.stringify({ QMP: { version: { qemu: { major: 8, minor: 0, micro: 0 } } } }) + '\n')
      sock.on('data', (d) => { const c = JSON.parse(d.toString()) as { id: number }; sock.write(JSON.stringify({ return: {}, id: c.id }) + '\n') })
    })
    await new Promise<void>(resolve => server.listen(later, resolve))
    cleanups.push(() => { server.close() })
    const qmp = await connecting
    cleanups.push(() => { qmp.close() })
    expect(qmp.version).toBe('8.0.0')
  })
})
