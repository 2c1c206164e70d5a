import { spawn } from 'node:child_process'
import type { KeptCacheInfo, MigrationSummary, NodeStatus } from '@shoal/node'
import { call, socketOf } from '../control-client.js'
import { formatBytes, formatTable } from '../format.js'

const secs = (ms: number | undefined): string => ms == null ? '-' : `${(ms / 1000).toFixed(1)} s`

/** `shoal migrations`: the migrations out of a node, running and past, newest first. */
export async function runMigrations (o: { node: string, json?: boolean }): Promise<void> {
  const list = await call(socketOf(o.node), 'GET', '/migrations') as MigrationSummary[]
  if (o.json === true) { process.stdout.write(JSON.stringify(list) + '\n'); return }
  if (list.length === 0) { process.stdout.write('no migrations\n'); return }
  const rows = list.map(m => [
    m.id, m.image, m.state === 'running' ? `running (${m.phase})` : m.state, m.startedAt.replace('T', ' ').slice(0, 19), formatBytes(m.bytes),
    secs(m.totalMs), m.downtimeMs == null ? '-' : `${m.downtimeMs.toFixed(0)} ms`, m.verified == null ? '-' : m.verified ? 'yes' : 'NO',
    m.peer.slice(-8), m.error != null ? m.error.code : ''
  ])
  const head = ['ID', 'IMAGE', 'STATE', 'STARTED (UTC)', 'SENT', 'TOTAL', 'DOWNTIME', 'VERIFIED', 'TO', 'ERROR']
  process.stdout.write(formatTable(head, rows))
}

/** `shoal cancel ID`: aborts a running migration; the workload keeps running on this node. */
export async function runCancel (id: string, o: { node: string, json?: boolean }): Promise<void> {
  const m = await call(socketOf(o.node), 'POST', `/migrations/${encodeURIComponent(id)}/cancel`) as MigrationSummary
  if (o.json === true) { process.stdout.write(JSON.stringify(m) + '\n'); return }
  process.stdout.write(`cancelling migration ${m.id} of ${m.image} (it was in ${m.phase}); the workload stays here\n`)
}

/** `shoal kept`: the caches this node keeps for the destinations of its post-copy migrations. */
export async function runKept (o: { node: string, json?: boolean }): Promise<void> {
  const kept = await call(socketOf(o.node), 'GET', '/kept') as KeptCacheInfo[]
  if (o.json === true) { process.stdout.write(JSON.stringify(kept) + '\n'); return }
  if (kept.length === 0) { process.stdout.write('no kept caches\n'); return }
  process.stdout.write(formatTable(['SESSION', 'VOLUME', 'DESTINATION', 'SINCE', 'SERVABLE BLOCKS'], kept.map(k => [k.session, k.volume, k.peer, k.since, String(k.servableBlocks)])))
}

/** `shoal kept drop SESSION`: drops a kept cache (refused while its destination is connected, unless --force). */
export async function runKeptDrop (session: string, o: { node: string, force?: boolean, json?: boolean }): Promise<void> {
  const k = await call(socketOf(o.node), 'DELETE', `/kept/${encodeURIComponent(session)}${o.force === true ? '?force=1' : ''}`) as KeptCacheInfo
  if (o.json === true) { process.stdout.write(JSON.stringify(k) + '\n'); return }
  process.stdout.write(`dropped the cache of volume ${k.volume} kept for ${k.peer} (session ${k.session})\n`)
}

/**
 * `shoal peers`: the peers a node knows; for each connected peer that takes images from this
 * node, what it announced it can take (free memory and disk after its margins, incoming
 * migrations, images). `-` where a peer announced nothing (it does not take from this node).
 */
export async function runPeers (o: { node: string, json?: boolean }): Promise<void> {
  const peers = await call(socketOf(o.node), 'GET', '/peers') as NodeStatus['peers']
  if (o.json === true) { process.stdout.write(JSON.stringify(peers) + '\n'); return }
  if (peers.length === 0) { process.stdout.write('no known peers\n'); return }
  const rows = peers.map(p => {
    const c = p.capacity
    return [
      p.peerId, p.connected ? 'connected' : 'known',
      c != null ? formatBytes(c.memoryFree) : '-', c != null ? formatBytes(c.cacheFree) : '-',
      c != null ? `${c.incoming}/${c.maxIncoming}` : '-', c != null ? String(c.images) : '-',
      p.addrs.join(' ')
    ]
  })
  process.stdout.write(formatTable(['PEER', 'STATE', 'MEM FREE', 'DISK FREE', 'INCOMING', 'IMAGES', 'ADDRESSES'], rows))
}

/** `shoal report ID`: prints the path of a finished migration's HTML page, or opens it. */
export async function runReport (id: string, o: { node: string, json?: boolean, open?: boolean }): Promise<void> {
  const files = await call(socketOf(o.node), 'GET', `/migrations/${encodeURIComponent(id)}/files`) as { json: string, html: string }
  if (o.json === true) { process.stdout.write(JSON.stringify(files) + '\n'); return }
  process.stdout.write(`${files.html}\n`)
  if (o.open === true) {
    // xdg-open where there is a desktop; detached, so the CLI does not wait for the browser.
    const child = spawn('xdg-open', [files.html], { detached: true, stdio: 'ignore' })
    child.on('error', () => { process.stderr.write('shoal: no xdg-open here; open the path above in a browser\n') })
    child.unref()
  }
}
