import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { rmSync } from 'node:fs'
import { AbortedError, checkName, errorCode, httpStatusOf, InvalidArgumentError, toErrorInfo } from '@shoal/core'
import type { MigrationReport } from '@shoal/core'
import type { KeptCacheInfo } from './kept-caches.js'
import { allowBody, createImageBody, evacuateBody, hotBody, importVolumeBody, migrateBody, parseWith, pullVolumeBody } from './api-schemas.js'
import type { ShoalNode } from './node-api.js'
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
 * | `POST /migrate` | `{ image, to, lanes?, maxRounds?, downtimeTargetMs?, autoConverge?, maxRate?, laneRate?, scanCpuShare?, adaptivePacing?, cacheMode?, postcopyPrefetch? }` | NDJSON: `{type:'progress',id,...}` lines, then `{type:'report',id}` or `{type:'error',id}` |
 * | `GET /migrations` | | {@link MigrationSummary}[]: running and past, newest first |
 * | `GET /migrations/<id>` | | {@link MigrationRecord}: the whole record (report, samples) |
 * | `GET /migrations/<id>/files` | | `{ json, html }`: the paths of its report files |
 * | `POST /migrations/<id>/cancel` | | the summary: the migration aborts, the workload stays here |
 * | `GET /peers` | | known peers, their addresses, connected or not, what each announced it can take |
 * | `GET /kept` | | {@link KeptCacheInfo}[]: caches kept for post-copy destinations |
 * | `DELETE /kept/<session>[?force=1]` | | the dropped cache's info; refused while its destination is connected unless forced |
 * | `POST /evacuate` | `{ to?: string[], any?: true, maxParallel?, maxRate?, maxAttempts?, images?, ...migration options }` | NDJSON: `{type:'progress',evacuation}` lines, then `{type:'report',report}` ({@link EvacuationReport}) or `{type:'error',error}`; hanging up cancels it |
 * | `POST /images/<name>/verify` | | {@link ImageVerification}: its cache against its volume, the workload's own check |
 *
 * Bodies are checked by the zod schemas of api-schemas.ts: an unknown key or a wrong type is a
 * 400 naming the key.
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

async function route (node: ShoalNode, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const url = new URL(req.url ?? '/', 'http://node')
    const parts = url.pathname.split('/').filter(p => p !== '')
    if (req.method === 'GET' && url.pathname === '/status') { send(res, 200, await node.status()); return }
    if (req.method === 'GET' && url.pathname === '/peers') { send(res, 200, await node.peers()); return }
    if (req.method === 'GET' && url.pathname === '/kept') { send(res, 200, node.keptCaches()); return }
    if (req.method === 'DELETE' && parts[0] === 'kept' && parts.length === 2) {
      send(res, 200, await node.dropKeptCache(pathPart(parts[1]), url.searchParams.get('force') === '1'))
      return
    }
    if (req.method === 'GET' && url.pathname === '/migrations') { send(res, 200, node.migrations()); return }
    if (req.method === 'GET' && parts[0] === 'migrations' && parts.length === 2) { send(res, 200, node.migration(pathPart(parts[1]))); return }
    if (req.method === 'GET' && parts[0] === 'migrations' && parts[2] === 'files' && parts.length === 3) { send(res, 200, node.migrationFiles(pathPart(parts[1]))); return }
    if (req.method === 'POST' && parts[0] === 'migrations' && parts[2] === 'cancel' && parts.length === 3) { send(res, 200, node.cancelMigration(pathPart(parts[1]))); return }
    if (req.method === 'POST' && url.pathname === '/images') {
      send(res, 200, await node.createImage(parseWith(createImageBody, await readJson(req), 'POST /images')))
      return
    }
    if (req.method === 'POST' && parts[0] === 'images' && parts[2] === 'verify' && parts.length === 3) { send(res, 200, await node.verifyImage(imageName(parts[1]))); return }
    if (req.method === 'POST' && parts[0] === 'images' && parts[2] === 'start' && parts.length === 3) { send(res, 200, await node.startImage(imageName(parts[1]), { force: url.searchParams.get('force') === '1' })); return }
    if (req.method === 'POST' && url.pathname === '/allow') {
      const body = parseWith(allowBody, await readJson(req), 'POST /allow')
      node.allowPeer(body.peerId)
      send(res, 200, { ok: true })
      return
    }
    if (req.method === 'POST' && url.pathname === '/volumes') {
      const body = parseWith(importVolumeBody, await readJson(req), 'POST /volumes')
      send(res, 200, await node.importVolume(body.id, body.path, body.blockSize))
      return
    }
    if (req.method === 'POST' && url.pathname === '/volumes/pull') {
      const body = parseWith(pullVolumeBody, await readJson(req), 'POST /volumes/pull')
      const ac = new AbortController()
      res.on('close', () => { if (!res.writableFinished) ac.abort(hungUp()) })
      send(res, 200, await node.pullVolume(body.id, { ...(body.from != null ? { from: body.from } : {}), signal: ac.signal }))
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
      const body = parseWith(hotBody, await readJson(req), 'POST /images/<name>/hot')
      node.markHot(imageName(parts[1]), body.from, body.to)
      send(res, 200, { ok: true })
      return
    }
    if (req.method === 'POST' && url.pathname === '/migrate') { await migrate(node, await readJson(req), req, res); return }
    if (req.method === 'POST' && url.pathname === '/evacuate') { await evacuate(node, await readJson(req), res); return }
    send(res, 404, { error: { code: 'ERR_NOT_FOUND', message: `no route ${req.method ?? ''} ${url.pathname}` } })
  } catch (err) {
    if (!res.headersSent) fail(res, err)
    else res.end()
  }
}

/** Why a request's work stops when its client goes away (a CLI's Ctrl-C, a script killed). */
const hungUp = (): AbortedError => new AbortedError('cancelled: the client that asked for it hung up')

/**
 * A streamed answer: NDJSON lines, and a signal that aborts when the client hangs up (which
 * cancels what it asked for).
 */
function ndjson (res: ServerResponse): { line: (v: unknown) => void, signal: AbortSignal } {
  const ac = new AbortController()
  res.on('close', () => { if (!res.writableFinished) ac.abort(hungUp()) })
  res.writeHead(200, { 'content-type': 'application/x-ndjson' })
  return { line: (v) => { res.write(JSON.stringify(v) + '\n') }, signal: ac.signal }
}

async function migrate (node: ShoalNode, raw: Record<string, unknown>, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { image, to, ...opts } = parseWith(migrateBody, raw, 'POST /migrate')
  // The client hanging up cancels the migration (the source then resumes).
  const { line, signal } = ndjson(res)
  let id: string | undefined
  try {
    const report = await node.migrate(image, to, { ...opts, signal, onId: (i) => { id = i }, onProgress: p => { line({ type: 'progress', id, ...p }) } })
    line({ type: 'report', id, report })
  } catch (err) {
    const report = (err as { report?: MigrationReport }).report
    line({ type: 'error', id, error: toErrorInfo(err), report })
  }
  res.end()
  void req
}

async function evacuate (node: ShoalNode, raw: Record<string, unknown>, res: ServerResponse): Promise<void> {
  const { to, any, maxParallel, maxRate, maxAttempts, images, ...migrate } = parseWith(evacuateBody, raw, 'POST /evacuate')
  // The client hanging up cancels the evacuation (images not moved yet stay here, running).
  const { line, signal } = ndjson(res)
  try {
    const report = await node.evacuate({
      ...(to != null ? { to } : {}), ...(any != null ? { any } : {}), ...(maxParallel != null ? { maxParallel } : {}),
      ...(maxRate != null ? { maxRate } : {}), ...(maxAttempts != null ? { maxAttempts } : {}), ...(images != null ? { images } : {}),
      migrate, signal, onProgress: (p) => { line({ type: 'progress', evacuation: p }) }
    })
    line({ type: 'report', report })
  } catch (err) {
    line({ type: 'error', error: toErrorInfo(err) })
  }
  res.end()
}
