import { request } from 'node:http'
import { join } from 'node:path'
import { existsSync } from 'node:fs'
import { CONTROL_SOCKET } from '@shoal/node'

/** An error answered by a node's control API. */
export class ControlError extends Error {
  static readonly code = 'ERR_CONTROL'
  constructor (readonly code: string, message: string) {
    super(message)
    this.name = 'ControlError'
  }
}

/** Resolves `--node` (a data directory or a socket path) to the control socket path. */
export function socketOf (node: string): string {
  const path = node.endsWith('.sock') ? node : join(node, CONTROL_SOCKET)
  if (!existsSync(path)) throw new ControlError('ERR_NO_NODE', `no node control socket at ${path} (is \`shoal node --data-dir ${node}\` running?)`)
  return path
}

/** Calls the control API; `onLine` receives NDJSON lines of streaming answers. */
export async function call (socket: string, method: string, path: string, body?: unknown, onLine?: (v: Record<string, unknown>) => void): Promise<unknown> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers: { 'content-type': 'application/json' } }, (res) => {
      let buf = ''
      let last: unknown
      res.setEncoding('utf8')
      const failed = (res.statusCode ?? 500) >= 400
      res.on('data', (chunk: string) => {
        buf += chunk
        // A refused request answers one JSON error, not a stream: read it whole at the end.
        if (onLine == null || failed) return
        let i
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i)
          buf = buf.slice(i + 1)
          if (line.trim() === '') continue
          last = JSON.parse(line)
          onLine(last as Record<string, unknown>)
        }
      })
      res.on('end', () => {
        if (onLine != null && !failed) { resolve(last); return }
        let v: { error?: { code: string, message: string } } | undefined
        try { v = buf === '' ? undefined : JSON.parse(buf) as typeof v } catch { v = undefined }
        if (failed) reject(new ControlError(v?.error?.code ?? 'ERR_CONTROL', v?.error?.message ?? `HTTP ${res.statusCode}`))
        else resolve(v)
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    if (body !== undefined) req.write(JSON.stringify(body))
    req.end()
  })
}
