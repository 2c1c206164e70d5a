import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { rmSync } from 'node:fs'
import { errorCode, InvalidArgumentError } from '@shoal/core'
import type { MigrationReport } from '@shoal/core'
import type { CreateImageOptions, MigrateOptions, ShoalNode } from './shoal-node.js'
import type { PullReport } from './volumes.js'

const MAX_BODY = 64 * 1024

/**
 * The node's local control API: HTTP on a unix socket (only local users with access to the data
 * directory can drive the node). JSON in, JSON out; `POST /migrate` streams NDJSON progress.
 *
 * | route | body | answer |
 * |---|---|---|
 * | `GET /status` | | {@link NodeStatus} |
 * | `POST /images` | {@link CreateImageOptions} | the image record |
 * | `POST /images/<name>/start` | | the image record |
 * | `DELETE /images/<name>` | | `{ ok: true }`: its workload stopped, the image deleted |
 * | `POST /allow` | `{ peerId }` | `{ ok: true }` |
 * | `POST /volumes` | `{ id, path, blockSize? }` | the imported replica volume |
 * | `POST /volumes/pull` | `{ id, from? }` | {@link PullReport}: the node became a replica, fetching from every peer holding it |
 * | `DELETE /volumes/<id>` | | `{ ok: true }` |
 * | `POST /images/<name>/hot` | `{ from, to }` | `{ ok: true }`: marks cache blocks [from, to) hot |
 * | `POST /migrate` | `{ image, to, lanes?, maxRounds?, downtimeTargetMs?, autoConverge?, maxRate?, laneRate?, scanCpuShare?, adaptivePacing? }` | NDJSON: `{type:'progress',...}` lines, then `{type:'report'}` or `{type:'error'}` |
 */
export async function startControlServer (node: ShoalNode, socketPath: string): Promise<Server> {
  rmSync(socketPath, { force: true })
  const server = createServer((req, res) => { void route(node, req, res) })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(socketPath, () => { server.off('error', reject); resolve() })
  })
  return server
}

async function readJson (req: IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0
  const chunks: Buffer[] = []
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.byteLength
    if (size > MAX_BODY) throw new InvalidArgumentError('request body too large')
    chunks.push(c)
  }
  if (size === 0) return {}
  try {
    const v: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'))
    if (typeof v !== 'object' || v == null || Array.isArray(v)) throw new Error('not an object')
    return v as Record<string, unknown>
  } catch {
    throw new InvalidArgumentError('request body must be a JSON object')
  }
}

function send (res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

function fail (res: ServerResponse, err: unknown): void {
  const code = errorCode(err)
  const status = code === 'ERR_INVALID_ARGUMENT' || code === 'ERR_INVALID_IMAGE' || code === 'ERR_CACHE_META' ? 400 : code === 'ERR_UNKNOWN_IMAGE' || code === 'ERR_UNKNOWN_VOLUME' ? 404 : 500
  send(res, status, { error: { code, name: err instanceof Error ? err.name : 'Error', message: err instanceof Error ? err.message : String(err) } })
}

async function route (node: ShoalNode, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const url = new URL(req.url ?? '/', 'http://node')
    const parts = url.pathname.split('/').filter(p => p !== '')
    if (req.method === 'GET' && url.pathname === '/status') { send(res, 200, await node.status()); return }
    if (req.method === 'POST' && url.pathname === '/images') { send(res, 200, await node.createImage(await readJson(req) as unknown as CreateImageOptions)); return }
    if (req.method === 'POST' && parts[0] === 'images' && parts[2] === 'start' && parts.length === 3) { send(res, 200, await node.startImage(decodeURIComponent(parts[1]!))); return }
    if (req.method === 'POST' && url.pathname === '/allow') {
      const body = await readJson(req)
      if (typeof body.peerId !== 'string') throw new InvalidArgumentError('peerId must be a string')
      node.allowPeer(body.peerId)
      send(res, 200, { ok: true })
      return
    }
    if (req.method === 'POST' && url.pathname === '/volumes') {
      const body = await readJson(req)
      if (typeof body.id !== 'string' || typeof body.path !== 'string') throw new InvalidArgumentError('id and path must be strings')
      if (body.blockSize !== undefined && (typeof body.blockSize !== 'number' || !Number.isInteger(body.blockSize))) throw new InvalidArgumentError('blockSize must be an integer')
      send(res, 200, await node.importVolume(body.id, body.path, body.blockSize as number | undefined))
      return
    }
    if (req.method === 'POST' && url.pathname === '/volumes/pull') {
      const body = await readJson(req)
      if (typeof body.id !== 'string') throw new InvalidArgumentError('id must be a string')
      if (body.from !== undefined && (!Array.isArray(body.from) || !body.from.every(p => typeof p === 'string'))) throw new InvalidArgumentError('from must be an array of peer IDs or multiaddrs')
      const ac = new AbortController()
      res.on('close', () => { if (!res.writableFinished) ac.abort() })
      send(res, 200, await node.pullVolume(body.id, { from: body.from as string[] | undefined, signal: ac.signal }))
      return
    }
    if (req.method === 'DELETE' && parts[0] === 'images' && parts.length === 2) {
      await node.removeImage(decodeURIComponent(parts[1]!))
      send(res, 200, { ok: true })
      return
    }
    if (req.method === 'DELETE' && parts[0] === 'volumes' && parts.length === 2) {
      await node.removeVolume(decodeURIComponent(parts[1]!))
      send(res, 200, { ok: true })
      return
    }
    if (req.method === 'POST' && parts[0] === 'images' && parts[2] === 'hot' && parts.length === 3) {
      const body = await readJson(req)
      if (typeof body.from !== 'number' || typeof body.to !== 'number') throw new InvalidArgumentError('from and to must be block numbers')
      node.markHot(decodeURIComponent(parts[1]!), body.from, body.to)
      send(res, 200, { ok: true })
      return
    }
    if (req.method === 'POST' && url.pathname === '/migrate') { await migrate(node, await readJson(req), req, res); return }
    send(res, 404, { error: { code: 'ERR_NOT_FOUND', message: `no route ${req.method ?? ''} ${url.pathname}` } })
  } catch (err) {
    if (!res.headersSent) fail(res, err)
    else res.end()
  }
}

async function migrate (node: ShoalNode, body: Record<string, unknown>, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (typeof body.image !== 'string') throw new InvalidArgumentError('image must be a string')
  if (typeof body.to !== 'string') throw new InvalidArgumentError('to must be a peer ID or multiaddr')
  const opts: MigrateOptions = {}
  for (const k of ['lanes', 'maxRounds', 'downtimeTargetMs', 'chunkBytes', 'streamsPerConnection', 'maxRate', 'laneRate'] as const) {
    const v = body[k]
    if (v === undefined) continue
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new InvalidArgumentError(`${k} must be a positive integer`)
    opts[k] = v
  }
  for (const k of ['autoConverge', 'adaptivePacing'] as const) {
    const v = body[k]
    if (v === undefined) continue
    if (typeof v !== 'boolean') throw new InvalidArgumentError(`${k} must be true or false`)
    opts[k] = v
  }
  if (body.scanCpuShare !== undefined) {
    const v = body.scanCpuShare
    if (typeof v !== 'number' || !(v > 0 && v <= 1)) throw new InvalidArgumentError('scanCpuShare must be a number in (0, 1]')
    opts.scanCpuShare = v
  }
  // The client hanging up cancels the migration (the source then resumes).
  const ac = new AbortController()
  res.on('close', () => { if (!res.writableFinished) ac.abort() })
  res.writeHead(200, { 'content-type': 'application/x-ndjson' })
  const line = (v: unknown): void => { res.write(JSON.stringify(v) + '\n') }
  try {
    const report = await node.migrate(body.image, body.to, { ...opts, signal: ac.signal, onProgress: p => { line({ type: 'progress', ...p }) } })
    line({ type: 'report', report })
  } catch (err) {
    const report = (err as { report?: MigrationReport }).report
    line({ type: 'error', error: { code: errorCode(err), name: (err as Error).name, message: (err as Error).message }, report })
  }
  res.end()
  void req
}
