import type { NodeStatus } from '@shoal/node'
import { call, socketOf } from '../control-client.js'
import { formatBytes } from '../format.js'

/** `shoal status`: what a node hosts. */
export async function runStatus (o: { node: string, json?: boolean }): Promise<void> {
  const s = await call(socketOf(o.node), 'GET', '/status') as NodeStatus
  if (o.json === true) { process.stdout.write(JSON.stringify(s) + '\n'); return }
  const lines = [`peer ${s.peerId}`, ...s.addrs.map(a => `  listening ${a}`), `incoming migrations: ${s.incoming}`, 'known peers:']
  if (s.peers.length === 0) lines.push('  (none)')
  for (const p of s.peers) lines.push(`  ${p.peerId}${p.connected ? ' (connected)' : ''}${p.addrs.length > 0 ? ` ${p.addrs.join(' ')}` : ''}`)
  lines.push('images:')
  if (s.images.length === 0) lines.push('  (none)')
  for (const i of s.images) {
    lines.push(`  ${i.spec.name}: ${i.state}${i.pid != null ? ` (pid ${i.pid})` : ''}, memory ${formatBytes(i.spec.memory.size)}, cache ${formatBytes(i.spec.cache.size)}, driver ${i.spec.driver}` +
      (i.arrivalCheck != null ? `; arrival check ${i.arrivalCheck.ok ? 'OK' : 'FAILED'}: ${i.arrivalCheck.detail}` : ''))
  }
  if (s.volumes.length > 0) lines.push('replica volumes:')
  for (const v of s.volumes) lines.push(`  ${v.id}: ${v.held}/${v.blockCount} blocks of ${formatBytes(v.blockSize)}`)
  process.stdout.write(lines.join('\n') + '\n')
}
