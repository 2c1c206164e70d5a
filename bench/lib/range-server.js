#!/usr/bin/env node
// A minimal static server for one file, with single-range support, so that a segmented HTTP
// downloader (aria2c) can split a download across mirrors (Python's http.server has no Range).
//
//   node bench/lib/range-server.js --file F --host IP --port N [--path /vol]
//
// Serves F at --path (default: /<basename of F>) and at /; GET and HEAD; `Range: bytes=a-b`,
// `bytes=a-` and `bytes=-n` (one range only) answer 206 with Content-Range, an unsatisfiable or
// malformed range answers 416 with `Content-Range: bytes */size`. Binds only --host. Prints
// `listening <host>:<port>` on stdout once bound; exits on SIGTERM/SIGINT or when its stdin
// closes (so a parent that dies does not leave it behind when spawned with a stdin pipe).
import { createReadStream, fstatSync, statSync } from 'node:fs'
import { createServer } from 'node:http'
import { basename } from 'node:path'
import { parseArgs } from 'node:util'

/** Parses a Range header against `size`: `{ start, end }` (inclusive), 'none', or 'bad'. */
export function parseRange (header, size) {
  if (header == null || header === '') return 'none'
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m == null || (m[1] === '' && m[2] === '')) return 'bad' // includes multi-range "a-b,c-d"
  let start, end
  if (m[1] === '') { // suffix: last n bytes
    const n = Number(m[2])
    if (n === 0) return 'bad'
    start = Math.max(0, size - n)
    end = size - 1
  } else {
    start = Number(m[1])
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
    if (m[2] !== '' && Number(m[2]) < start) return 'bad'
  }
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start >= size || start > end) return 'bad'
  return { start, end }
}

/** Starts the server; resolves to the node:http Server once listening. */
export async function serveFile ({ file, host, port, path = `/${basename(file)}` }) {
  const server = createServer((req, res) => {
    const url = req.url.split('?')[0]
    if (url !== path && url !== '/') { res.writeHead(404, { 'content-length': 0 }); res.end(); return }
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET, HEAD', 'content-length': 0 }); res.end(); return }
    let size
    try { size = statSync(file).size } catch { res.writeHead(404, { 'content-length': 0 }); res.end(); return }
    const headers = { 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' }
    const r = parseRange(req.headers.range, size)
    if (r === 'bad') {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${size}`, 'content-length': 0 })
      res.end()
      return
    }
    const { start, end } = r === 'none' ? { start: 0, end: size - 1 } : r
    const length = size === 0 ? 0 : end - start + 1
    if (r === 'none') res.writeHead(200, { ...headers, 'content-length': length })
    else res.writeHead(206, { ...headers, 'content-length': length, 'content-range': `bytes ${start}-${end}/${size}` })
    if (req.method === 'HEAD' || length === 0) { res.end(); return }
    const stream = createReadStream(file, { start, end, highWaterMark: 1 << 20 })
    stream.on('error', () => res.destroy())
    res.on('close', () => stream.destroy())
    stream.pipe(res)
  })
  server.keepAliveTimeout = 60_000
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(port, host, resolve) })
  return server
}

if (process.argv[1] != null && import.meta.url.endsWith(basename(process.argv[1]))) {
  const { values } = parseArgs({ options: { file: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, path: { type: 'string' } } })
  if (values.file == null || values.host == null || values.port == null) {
    console.error('usage: range-server.js --file F --host IP --port N [--path /vol]')
    process.exit(2)
  }
  const server = await serveFile({ file: values.file, host: values.host, port: Number(values.port), path: values.path })
  console.log(`listening ${values.host}:${server.address().port}`)
  const stop = () => { server.closeAllConnections(); server.close(); process.exit(0) }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  // Parent gone (stdin pipe closed) → exit. Only when stdin is a pipe (not /dev/null or a tty).
  let stdinIsPipe = false
  try { stdinIsPipe = fstatSync(0).isFIFO() || fstatSync(0).isSocket() } catch {}
  if (stdinIsPipe) {
    process.stdin.on('end', stop)
    process.stdin.on('error', stop)
    process.stdin.resume()
  }
}
