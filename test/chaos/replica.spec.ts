import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { call } from '@shoal/cli'
import { chaosCluster, expectNoLeftovers, MIGRATE, migrateWatched, MiB, outcomeOf, prefix, processesMentioning, until } from '../fixtures/chaos.js'
import { teardownCase } from '../fixtures/chaos.js'
import { keepLogs } from '../fixtures/chaos.js'
import type { ChaosCluster } from '../fixtures/chaos.js'
import { netnsUnavailable } from '../fixtures/netns.js'
import { tempDir } from '../fixtures/temp.js'

const unavailable = netnsUnavailable()
if (unavailable != null) console.warn(`skipping the chaos suite (replica): ${unavailable}`)

describe.skipIf(unavailable != null)('chaos: kill -9 of a replica serving cold cache blocks', () => {
  let c: ChaosCluster | undefined
  const cleanups: Array<() => void> = []
  afterEach(() => {
    if (c != null) teardownCase(c)
    c = undefined
  })

  // The replica is in use from the handshake (the destination looks for replicas when the cache
  // is offered) until the end of pre-copy (the switchover waits for the fetch to end): later
  // phases do not involve it.
  for (const phase of ['handshake', 'precopy'] as const) {
    it(`kill -9 of the replica at ${phase}: the destination gets the blocks elsewhere and the migration verifies`, async () => {
      // Host 1 migrates to host 2; host 3 holds the volume the image's cache caches. mDNS lets the
      // destination find the replica (the cluster gives no other way to introduce peers).
      const cc = c = chaosCluster(prefix('cr'), { hosts: 3, mdns: true })
      const vol = tempDir('chaos-vol')
      cleanups.push(vol.cleanup)
      writeFileSync(`${vol.path}/base.img`, randomBytes(24 * MiB))
      await call(cc.socket(1), 'POST', '/volumes', { id: 'base', path: `${vol.path}/base.img` })
      await call(cc.socket(3), 'POST', '/volumes', { id: 'base', path: `${vol.path}/base.img` })
      const replica = cc.info(3).peerId
      await until('the destination to discover the replica (mDNS)', async () => (await cc.status(2)).peers.some(p => p.peerId === replica) ? true : undefined, 30_000, 200)
      await call(cc.socket(1), 'POST', '/images', { name: 'vm', memorySize: 16 * MiB, cacheSize: 0, cacheVolume: 'base', fill: 'random', config: { rate: 500, recordRate: 50, arrivalCheck: 'full' } })
      await call(cc.socket(1), 'POST', '/images/vm/start')
      const pid = cc.nodePid(3)
      let killed = false
      const m = migrateWatched(cc, 1, { ...MIGRATE, to: cc.addr(2) }, (p) => {
        const serving = (p.cache?.sources[replica]?.bytes ?? 0) > 0
        if (!killed && p.phase === phase && (phase === 'handshake' || serving)) {
          process.kill(pid, 'SIGKILL')
          killed = true
        }
      })
      const result = await m.done
      expect(killed, `never struck at ${phase}: ${m.phases.join(' → ')}`).toBe(true)
      await until('the replica node to be gone', () => cc.nodeAlive(3) ? undefined : true)
      cc.restartNode(3)
      const cache = result.type === 'report' ? result.report.cache : undefined
      console.info(`[chaos] kill -9 replica at ${phase}: phases ${m.phases.join('>')}; result ${result.type}${result.type !== 'report' ? ` ${JSON.stringify(result)}` : ''}; replica bytes ${String(cache?.sources[replica]?.bytes)} dropped ${JSON.stringify(cache?.dropped)} leftover ${String(cache?.leftoverBlocks)}`)
      expect(result.type).toBe('report')
      if (result.type === 'report') {
        expect(result.report.verified).toBe(true)
      }
      const { outcome, detail } = await outcomeOf(cc, 'vm', 1, 2)
      console.info(`[chaos] kill -9 replica at ${phase}: outcome ${outcome} (${detail})`)
      expect(outcome).toBe('destination')
      await expectNoLeftovers(cc)
    })
  }
})
