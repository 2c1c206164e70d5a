import type { NodeStatus } from '@shoal/node'
import { call, socketOf } from '../control-client.js'
import { formatBytes } from '../format.js'

/** `shoal status`: what a node hosts. */
export async function runStatus (o: { node: string, json?: boolean }): Promise<void> {
  const s = await call(socketOf(o.node), 'GET', '/status') as NodeStatus
  if (o.json === true) { process.stdout.write(JSON.stringify(s) + '\n'); return }
  const lines = [`peer ${s.peerId}`, ...s.addrs.map(a => `  listening ${a}`), `incoming migrations: ${s.incoming}${(s.arriving ?? []).length > 0 ? ` (arriving: ${s.arriving!.join(', ')})` : ''}`, 'known peers:']
  if (s.peers.length === 0) lines.push('  (none)')
  for (const p of s.peers) lines.push(`  ${p.peerId}${p.connected ? ' (connected)' : ''}${p.addrs.length > 0 ? ` ${p.addrs.join(' ')}` : ''}`)
  lines.push('images:')
  if (s.images.length === 0) lines.push('  (none)')
  for (const i of s.images) {
    lines.push(`  ${i.spec.name}: ${i.state}${i.pid != null ? ` (pid ${i.pid})` : ''}, memory ${formatBytes(i.spec.memory.size)}, cache ${formatBytes(i.spec.cache.size)}, driver ${i.spec.driver}` +
      (i.arrivalCheck != null ? `; arrival check ${i.arrivalCheck.ok ? 'OK' : 'FAILED'}: ${i.arrivalCheck.detail}` : ''))
    const pc = i.postcopy
    if (pc != null) {
      const od = pc.stats.postcopy?.onDemand
      const bySource = Object.entries(pc.stats.sources).map(([id, x]) => `${id.slice(-8)} ${formatBytes(x.bytes)}`).join(', ')
      lines.push(`    post-copy from ${pc.from.slice(-8)}: ${pc.presentBlocks}/${pc.blocks} claimed blocks present; ${od?.fetches ?? 0} read on demand (p50 ${od?.p50Ms ?? 0} ms, p99 ${od?.p99Ms ?? 0} ms); ${bySource}` +
        ((od?.blocked.length ?? 0) > 0 ? `; READS BLOCKED on blocks ${od!.blocked.join(', ')}: no reachable source holds them (ERR_POSTCOPY_STALLED)` : ''))
    } else if (i.postcopyResult != null) {
      const r = i.postcopyResult
      lines.push(`    post-copy ${r.complete ? 'complete' : `STOPPED at ${r.presentBlocks}/${r.blocks} blocks${r.error != null ? ` (${r.error})` : ''}`} after ${(r.ms / 1000).toFixed(1)} s; ${r.onDemand?.fetches ?? 0} read on demand (p50 ${r.onDemand?.p50Ms ?? 0} ms, p99 ${r.onDemand?.p99Ms ?? 0} ms)`)
    }
  }
  if ((s.kept ?? []).length > 0) lines.push('caches kept for post-copy destinations:')
  for (const k of s.kept ?? []) lines.push(`  ${k.volume} for ${k.peer} since ${k.since}: ${k.servableBlocks} blocks servable`)
  if (s.volumes.length > 0) lines.push('replica volumes:')
  for (const v of s.volumes) lines.push(`  ${v.id}: ${v.held}/${v.blockCount} blocks of ${formatBytes(v.blockSize)}`)
  process.stdout.write(lines.join('\n') + '\n')
}
