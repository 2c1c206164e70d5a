import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { rmSync } from 'node:fs'
import {
  checkBlockSize, checkChunkBytes, checkGeometry, checkLanes, checkName, DEFAULT_BLOCK_SIZE, DEFAULT_PAGE_SIZE, errorCode, httpStatusOf,
  InvalidArgumentError, toErrorInfo
} from '@shoal/core'
import type { MigrationReport } from '@shoal/core'
import type { CreateImageOptions, MigrateOptions, ShoalNode } from './node-api.js'
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
  // The status comes from the one table of codes (errors.ts), like the CLI's exit code.
  send(res, httpStatusOf(errorCode(err)), { error: toErrorInfo(err) })
}

/** An image name from a URL path, checked by the one name rule. */
function imageName (part: string | undefined): string {
  return checkName(pathPart(part), 'image name')
}

/** A %-decoded path segment; a malformed escape is the caller's error (400), not ours. */
function pathPart (part: string | undefined): string {
  try {
    return decodeURIComponent(part ?? '')
  } catch (err) {
    throw new InvalidArgumentError(`malformed %-escape in the request path: ${JSON.stringify(part)}`, { cause: err })
  }
}

/** Checks the body of `POST /images` with the limits every other entry point uses; names its fields. */
function checkCreateImage (body: Record<string, unknown>): void {
  checkName(body.name, 'image name')
  for (const k of ['memorySize', 'cacheSize', 'pageSize', 'blockSize'] as const) {
    if (body[k] !== undefined && typeof body[k] !== 'number') throw new InvalidArgumentError(`${k} must be a number of bytes`)
  }
  if (body.cacheVolume !== undefined) checkName(body.cacheVolume, 'volume id')
  // With a cache volume, the cache's sizes come from the volume (checked when it was imported).
  checkGeometry({
    memorySize: body.memorySize as number,
    pageSize: (body.pageSize as number | undefined) ?? DEFAULT_PAGE_SIZE,
    cacheSize: body.cacheVolume !== undefined ? 0 : body.cacheSize as number,
    blockSize: (body.blockSize as number | undefined) ?? DEFAULT_BLOCK_SIZE
  }, InvalidArgumentError, { memorySize: 'memorySize', pageSize: 'pageSize', cacheSize: 'cacheSize', blockSize: 'blockSize' })
}

async function route (node: ShoalNode, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const url = new URL(req.url ?? '/', 'http://node')
    const parts = url.pathname.split('/').filter(p => p !== '')
    if (req.method === 'GET' && url.pathname === '/status') { send(res, 200, await node.status()); return }
    if (req.method === 'POST' && url.pathname === '/images') {
      const body = await readJson(req)
      checkCreateImage(body)
      send(res, 200, await node.createImage(body as unknown as CreateImageOptions))
      return
    }
    if (req.method === 'POST' && parts[0] === 'images' && parts[2] === 'start' && parts.length === 3) { send(res, 200, await node.startImage(imageName(parts[1]), { force: url.searchParams.get('force') === '1' })); return }
    if (req.method === 'POST' && url.pathname === '/allow') {
      const body = await readJson(req)
      if (typeof body.peerId !== 'string') throw new InvalidArgumentError('peerId must be a string')
      node.allowPeer(body.peerId)
      send(res, 200, { ok: true })
      return
    }
    if (req.method === 'POST' && url.pathname === '/volumes') {
      const body = await readJson(req)
      const id = checkName(body.id, 'volume id')
      if (typeof body.path !== 'string') throw new InvalidArgumentError('path must be a string')
      if (body.blockSize !== undefined) checkBlockSize(body.blockSize, 'blockSize')
      send(res, 200, await node.importVolume(id, body.path, body.blockSize as number | undefined))
      return
    }
    if (req.method === 'POST' && url.pathname === '/volumes/pull') {
      const body = await readJson(req)
      const id = checkName(body.id, 'volume id')
      if (body.from !== undefined && (!Array.isArray(body.from) || !body.from.every(p => typeof p === 'string'))) throw new InvalidArgumentError('from must be an array of peer IDs or multiaddrs')
      const ac = new AbortController()
      res.on('close', () => { if (!res.writableFinished) ac.abort() })
      send(res, 200, await node.pullVolume(id, { from: body.from as string[] | undefined, signal: ac.signal }))
      return
    }
    if (req.method === 'DELETE' && parts[0] === 'images' && parts.length === 2) {
      await node.removeImage(imageName(parts[1]))
      send(res, 200, { ok: true })
      return
    }
    if (req.method === 'DELETE' && parts[0] === 'volumes' && parts.length === 2) {
      await node.removeVolume(checkName(pathPart(parts[1]), 'volume id'))
      send(res, 200, { ok: true })
      return
    }
    if (req.method === 'POST' && parts[0] === 'images' && parts[2] === 'hot' && parts.length === 3) {
      const body = await readJson(req)
      if (typeof body.from !== 'number' || typeof body.to !== 'number') throw new InvalidArgumentError('from and to must be block numbers')
      node.markHot(imageName(parts[1]), body.from, body.to)
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
  const image = checkName(body.image, 'image name')
  if (typeof body.to !== 'string') throw new InvalidArgumentError('to must be a peer ID or multiaddr')
  const opts: MigrateOptions = {}
  if (body.lanes !== undefined) checkLanes(body.lanes, 'lanes')
  if (body.chunkBytes !== undefined) checkChunkBytes(body.chunkBytes, 'chunkBytes')
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
    const report = await node.migrate(image, body.to, { ...opts, signal: ac.signal, onProgress: p => { line({ type: 'progress', ...p }) } })
    line({ type: 'report', report })
  } catch (err) {
    const report = (err as { report?: MigrationReport }).report
    line({ type: 'error', error: toErrorInfo(err), report })
  }
  res.end()
  void req
}
