import { request } from 'node:http'
import { join } from 'node:path'
import { existsSync } from 'node:fs'
import { CONTROL_SOCKET } from '@shoal/node'
import { fromErrorInfo, NodeGoneError, NoNodeError } from '@shoal/core'
import type { ErrorInfo, ShoalError } from '@shoal/core'

/**
 * An error answered by a node's control API, rebuilt as the class its code belongs to (so the
 * CLI reports the node's code and exit status as if it had thrown the error itself).
 */
export function controlError (info: Partial<ErrorInfo> | undefined, fallback: string): ShoalError {
  return fromErrorInfo({ code: info?.code ?? 'ERR_INTERNAL', name: info?.name ?? 'Error', message: info?.message ?? fallback })
}

/** Resolves `--node` (a data directory or a socket path) to the control socket path. */
export function socketOf (node: string): string {
  const path = node.endsWith('.sock') ? node : join(node, CONTROL_SOCKET)
  if (!existsSync(path)) throw new NoNodeError(`no node control socket at ${path} (is \`shoal node --data-dir ${node}\` running?)`)
  return path
}

/**
 * Calls the control API; `onLine` receives NDJSON lines of streaming answers. A node that is not
 * listening rejects with {@link NoNodeError}; one that goes away before it has answered (crash,
 * stop) with {@link NodeGoneError}; an error answer as its own class and code.
 */
export async function call (socket: string, method: string, path: string, body?: unknown, onLine?: (v: Record<string, unknown>) => void): Promise<unknown> {
  return await new Promise((resolve, reject) => {
    let settled = false
    const done = (err: Error | undefined, v?: unknown): void => {
      if (settled) return
      settled = true
      if (err != null) reject(err); else resolve(v)
    }
    const gone = (cause: unknown): NodeGoneError => new NodeGoneError(`the node at ${socket} went away before it answered ${method} ${path} (it crashed or was stopped; see its log)`, { cause })
    // A connection per call: a kept-alive socket the node closed while this process was busy would fail the next call with EPIPE.
    const req = request({ socketPath: socket, method, path, agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
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
      // The connection dropped mid-answer: the node died (its socket closed without an end).
      res.on('aborted', () => { done(gone(undefined)) })
      res.on('error', (err) => { done(gone(err)) })
      res.on('end', () => {
        if (!res.complete) { done(gone(undefined)); return }
        if (onLine != null && !failed) { done(undefined, last); return }
        let v: { error?: Partial<ErrorInfo> } | undefined
        try { v = buf === '' ? undefined : JSON.parse(buf) as typeof v } catch { v = undefined }
        if (failed) done(controlError(v?.error, `the node answered HTTP ${res.statusCode}`))
        else done(undefined, v)
      })
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      // Nobody listens on the socket (a node that crashed leaves its socket file behind).
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') done(new NoNodeError(`no node is listening on ${socket} (start it with \`shoal node\`; a crashed node leaves its socket behind)`, { cause: err }))
      else done(gone(err))
    })
    if (body !== undefined) req.write(JSON.stringify(body))
    req.end()
  })
}
