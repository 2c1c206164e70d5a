import { afterAll, describe, expect, it } from 'vitest'
import { call } from '@shoal/cli'
import type { MigrationProgress, MigrationReport } from '@shoal/core'
import type { NodeStatus } from '@shoal/node'
import { clusterUp, netnsUnavailable } from '../fixtures/netns.js'
import type { NetnsCluster } from '../fixtures/netns.js'

const unavailable = netnsUnavailable()

describe('multi-NIC lanes on network namespaces', () => {
  let cluster: NetnsCluster | undefined
  afterAll(() => {
    cluster?.down()
    if (cluster != null) expect(cluster.leftovers()).toEqual([])
  })

  it('survives a NIC going down mid-migration, and a new lane joins when it comes back', async ({ skip }) => {
    if (unavailable != null) {
      console.warn(`skipping the namespace test: ${unavailable}`)
      skip(`network namespaces unavailable: ${unavailable}`)
    }
    const c = cluster = clusterUp(`sf${process.pid % 100000}`, ['--hosts', '2', '--nics', '2', '--rate', '60mbit'])
    const to = c.info(2).addrs.find(a => a.includes('/198.18.1.2/'))!
    await call(c.socket(1), 'POST', '/images', { name: 'vm', memorySize: 96 * 2 ** 20, cacheSize: 8 * 2 ** 20, fill: 'random', config: { rate: 500, recordRate: 50 } })
    await call(c.socket(1), 'POST', '/images/vm/start')

    let downAt = -1
    let upAt = -1
    let sawFailed = false
    const result = await call(c.socket(1), 'POST', '/migrate', { image: 'vm', to, lanes: 4 }, (v) => {
      if (v.type !== 'progress') return
      const p = v as unknown as MigrationProgress
      // NIC 2 of the source goes down at a quarter of the image; it comes back once its lanes were
      // declared dead, while there is still plenty to send.
      if (downAt < 0 && p.bytes > 24 * 2 ** 20) { c.ip(1, 'link', 'set', 'eth2', 'down'); downAt = p.bytes }
      if (downAt >= 0 && upAt < 0 && p.lanes.some(l => l.state === 'failed')) {
        sawFailed = true
        c.ip(1, 'link', 'set', 'eth2', 'up')
        upAt = p.bytes
      }
    }) as { type: string, report: MigrationReport }

    expect(downAt).toBeGreaterThan(0)
    expect(sawFailed).toBe(true)
    expect(result.type).toBe('report')
    const r = result.report
    expect(r.ok).toBe(true)
    expect(r.verified).toBe(true)
    const failed = r.lanes.filter(l => l.state === 'failed')
    expect(failed.length).toBeGreaterThan(0)
    expect(failed.every(l => l.localAddress === '198.18.2.1' && /stalled|closed|reset/.test(l.error ?? ''))).toBe(true)
    // Lanes used both NICs, each bound to the local address on the peer's network.
    expect(new Set(r.lanes.map(l => `${l.localAddress}>${l.remoteAddress}`))).toEqual(new Set(['198.18.1.1>198.18.1.2', '198.18.2.1>198.18.2.2']))
    // A replacement lane on NIC 2 joined after the link came back and carried data.
    const joined = r.lanes.filter(l => l.index >= 4 && l.localAddress === '198.18.2.1')
    expect(joined.length).toBeGreaterThan(0)
    expect(joined.some(l => l.bytes > 0)).toBe(true)

    const dst = await call(c.socket(2), 'GET', '/status') as NodeStatus
    expect(dst.images.map(i => [i.spec.name, i.state, i.arrivalCheck?.ok])).toEqual([['vm', 'running', true]])
  })

  it('survives losing the NIC that carries the control lane: control moves to a lane on the other NIC', async ({ skip }) => {
    if (unavailable != null) skip(`network namespaces unavailable: ${unavailable}`)
    const c = cluster ??= clusterUp(`sf${process.pid % 100000}`, ['--hosts', '2', '--nics', '2', '--rate', '60mbit'])
    c.ip(1, 'link', 'set', 'eth2', 'up') // whatever the first test left
    const here = await call(c.socket(2), 'GET', '/status') as NodeStatus
    if (!here.images.some(i => i.spec.name === 'vm')) {
      // The first test did not leave its image on host 2: make one there.
      await call(c.socket(2), 'POST', '/images', { name: 'vm', memorySize: 96 * 2 ** 20, cacheSize: 8 * 2 ** 20, fill: 'random', config: { rate: 500, recordRate: 50 } })
      await call(c.socket(2), 'POST', '/images/vm/start')
    }
    const to = c.info(1).addrs.find(a => a.includes('/198.18.1.1/'))!
    // This time host 2 migrates the image back to host 1; NIC 1 of host 2 dies for good.
    let downAt = -1
    const result = await call(c.socket(2), 'POST', '/migrate', { image: 'vm', to, lanes: 4 }, (v) => {
      if (v.type !== 'progress') return
      const p = v as unknown as MigrationProgress
      if (downAt < 0 && p.bytes > 24 * 2 ** 20) { c.ip(2, 'link', 'set', 'eth1', 'down'); downAt = p.bytes }
    }) as { type: string, report: MigrationReport }
    expect(downAt).toBeGreaterThan(0)
    expect(result.type).toBe('report')
    const r = result.report
    expect(r.ok).toBe(true)
    expect(r.verified).toBe(true)
    expect(r.controlMoves?.length).toBeGreaterThan(0)
    expect(r.lanes.filter(l => l.localAddress === '198.18.1.2').every(l => l.state === 'failed')).toBe(true)
    const src = await call(c.socket(1), 'GET', '/status') as NodeStatus
    expect(src.images.map(i => [i.spec.name, i.state, i.arrivalCheck?.ok])).toEqual([['vm', 'running', true]])
  })
})
