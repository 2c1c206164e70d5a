import { mkdtempSync, rmSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { decodeFrame, encodeFrameBytes, FrameType } from '@shoal/core'
import { startNode } from '../fixtures/nodes.js'
import { tempDir } from '../fixtures/temp.js'

/** A raw request to the control socket (the path is sent exactly as given). */
async function raw (socketPath: string, method: string, path: string, body?: string): Promise<{ status: number, body: { error?: { code: string, message: string } } }> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, agent: false }, (res) => {
      let text = ''
      res.on('data', (d: Buffer) => { text += d.toString() })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }) })
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('control API against bad requests', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  it('answers malformed paths and bodies with 400 and a code naming the cause, never ERR_INTERNAL', async () => {
    const data = tempDir('ctl')
    cleanups.push(data.cleanup)
    await startNode('127.0.0.1', cleanups, { dataDir: data.path })
    const sock = join(data.path, 'control.sock')
    const dir = mkdtempSync(join(tmpdir(), 'shoal-ctl-dir-'))
    cleanups.push(() => { rmSync(dir, { recursive: true, force: true }) })
    const cases: Array<[string, string, string | undefined]> = [
      ['POST', '/images/%/start', undefined],
      ['DELETE', '/images/x%E0%A4%A', undefined],
      ['DELETE', '/volumes/%ZZ', undefined],
      ['POST', '/images/x%ZZ/hot', '{"from":0,"to":1}'],
      ['POST', '/volumes', JSON.stringify({ id: 'v', path: dir, blockSize: 4096 })],
      ['POST', '/volumes', JSON.stringify({ id: 'v', path: join(dir, 'missing'), blockSize: 4096 })]
    ]
    for (const [method, path, body] of cases) {
      const r = await raw(sock, method, path, body)
      expect(r.status, `${method} ${path}`).toBe(400)
      expect(r.body.error?.code, `${method} ${path}`).toBe('ERR_INVALID_ARGUMENT')
    }
  })

  it('an ABORT whose message is too long for the wire is cut, not refused (the peer must still learn why)', () => {
    const f = decodeFrame(encodeFrameBytes({ type: FrameType.Abort, code: 'ERR_NO_SPACE', message: 'é'.repeat(5000) }))
    expect(f.type).toBe(FrameType.Abort)
    if (f.type !== FrameType.Abort) return
    expect(f.code).toBe('ERR_NO_SPACE')
    expect(Buffer.byteLength(f.message)).toBeLessThanOrEqual(4096)
    expect(f.message.endsWith('...')).toBe(true)
  })
})
