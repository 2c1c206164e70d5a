// node bench/lanes-raw/record-layer.mjs: is TLS's record layer what makes node:tls cost CPU?
// Moves 1 GiB over one loopback connection, both ends in this process (so process CPU is both
// ends), three ways: plain node:net TCP (baseline), node:tls (TLS 1.3, AES-256-GCM and
// ChaCha20-Poly1305), and plain TCP carrying 1 MiB frames each sealed with AES-256-GCM by
// node:crypto (a record layer of our own, 64x larger records than TLS's 16 KiB). Prints MB/s and
// CPU-s per GiB (both ends) and writes bench/results/record-layer.json. Needs the openssl CLI
// (for a throwaway self-signed certificate).
import { execFileSync } from 'node:child_process'
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { connect as netConnect, createServer as netServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect, createServer as tlsServer } from 'node:tls'
import { printTable, writeResults } from '../lib/harness.js'

const GiB = 2 ** 30
const FRAME = 1 << 20
const dir = mkdtempSync(join(tmpdir(), 'shoal-record-layer-'))
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '1', '-subj', '/CN=bench'], { stdio: 'ignore' })
const key = readFileSync(join(dir, 'k.pem'))
const cert = readFileSync(join(dir, 'c.pem'))
rmSync(dir, { recursive: true, force: true })

/** Runs `send(socket)` against a server whose `onData` counts received bytes; resolves with figures. */
async function measure (name, listen, dial, receiver = (count) => (d) => count(d.length)) {
  return await new Promise((resolve) => {
    let got = 0
    let t0
    let c0
    const srv = listen((s) => {
      t0 = performance.now()
      c0 = process.cpuUsage()
      s.on('data', receiver((n) => {
        got += n
        if (got >= GiB) {
          const c = process.cpuUsage(c0)
          const secs = (performance.now() - t0) / 1000
          s.destroy()
          srv.close()
          resolve({ transport: name, MBps: +(GiB / secs / 1e6).toFixed(0), cpu_s_per_GiB_both_ends: +((c.user + c.system) / 1e6).toFixed(2) })
        }
      }))
    })
    srv.listen(0, '127.0.0.1', () => { void dial(srv.address().port) })
  })
}

async function pump (socket, frame) {
  for (let sent = 0; sent < GiB + FRAME && !socket.destroyed; sent += FRAME) {
    if (!frame(socket)) await new Promise(resolve => { socket.once('drain', resolve); socket.once('close', resolve) })
  }
}

const payload = Buffer.alloc(FRAME, 7)
const rows = []
rows.push(await measure('node:net TCP (baseline)', (h) => netServer(h), (port) => {
  const c = netConnect(port, '127.0.0.1', () => { void pump(c, s => s.write(payload)) })
  c.on('error', () => {})
}))
for (const cipher of ['TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
  rows.push(await measure(`node:tls ${cipher}`, (h) => tlsServer({ key, cert, minVersion: 'TLSv1.3', ciphersuites: cipher }, h), (port) => {
    const c = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false, ciphersuites: cipher }, () => { void pump(c, s => s.write(payload)) })
    c.on('error', () => {})
  }))
}
const aead = randomBytes(32)
const nonce = (n) => { const iv = Buffer.alloc(12); iv.writeUInt32LE(n, 0); return iv }
rows.push(await measure('TCP + AES-256-GCM per 1 MiB frame (node:crypto)', (h) => netServer(h), (port) => {
  let n = 0
  const c = netConnect(port, '127.0.0.1', () => {
    void pump(c, (s) => {
      const ci = createCipheriv('aes-256-gcm', aead, nonce(n++))
      const body = ci.update(payload)
      ci.final()
      const head = Buffer.alloc(4)
      head.writeUInt32LE(body.length, 0)
      s.cork(); s.write(head); s.write(body); const ok = s.write(ci.getAuthTag()); s.uncork()
      return ok
    })
  })
  c.on('error', () => {})
}, (count) => {
  // Opens each frame as its pieces arrive (streaming decryption, no reassembly copy); the tag is
  // checked before the frame counts.
  let head = Buffer.alloc(0)
  let de
  let left = -1
  let tag = Buffer.alloc(0)
  let n = 0
  return (d) => {
    while (d.length > 0) {
      if (left < 0) {
        const k = Math.min(4 - head.length, d.length)
        head = Buffer.concat([head, d.subarray(0, k)])
        d = d.subarray(k)
        if (head.length < 4) return
        left = head.readUInt32LE(0)
        de = createDecipheriv('aes-256-gcm', aead, nonce(n++))
        head = Buffer.alloc(0)
      }
      if (left > 0) {
        const k = Math.min(left, d.length)
        de.update(d.subarray(0, k))
        left -= k
        d = d.subarray(k)
        if (left > 0) return
      }
      const k = Math.min(16 - tag.length, d.length)
      tag = Buffer.concat([tag, d.subarray(0, k)])
      d = d.subarray(k)
      if (tag.length < 16) return
      de.setAuthTag(tag)
      de.final()
      tag = Buffer.alloc(0)
      left = -1
      count(FRAME)
    }
  }
}))
const base = rows[0].cpu_s_per_GiB_both_ends
for (const r of rows) r.cpu_over_tcp = +(r.cpu_s_per_GiB_both_ends - base).toFixed(2)
printTable(rows)
writeResults('record-layer', { setup: { bytes: GiB, frame: FRAME, date: new Date().toISOString(), note: 'both ends in one process' }, cases: rows })
