import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { call } from '@shoal/cli'
import { allocatedBytes, BIN, chaosCluster, expectNoLeftovers, MIGRATE, migrateWatched, MiB, outcomeOf, prefix, processesMentioning, startImage, strikesAt, until } from '../fixtures/chaos.js'
import { teardownCase } from '../fixtures/chaos.js'
import { keepLogs } from '../fixtures/chaos.js'
import type { ChaosCluster } from '../fixtures/chaos.js'
import { netnsUnavailable } from '../fixtures/netns.js'

const unavailable = netnsUnavailable()
if (unavailable != null) console.warn(`skipping the chaos suite (signals): ${unavailable}`)

/** Bytes that reached the destination's staging memory file(s) so far. */
function stagedBytes (c: ChaosCluster, h: number): number {
  const shm = c.shmDir(h)
  return readdirSync(shm).filter(f => f.startsWith('incoming-')).reduce((a, f) => a + allocatedBytes(`${shm}/${f}`), 0)
}

describe.skipIf(unavailable != null)('chaos: SIGINT and SIGTERM of the CLI and of the nodes mid-migration', () => {
  let c: ChaosCluster | undefined
  afterEach(() => {
    if (c != null) teardownCase(c)
    c = undefined
  })

  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    it(`${sig} of \`shoal migrate\` during pre-copy cancels the migration; the source keeps running`, async () => {
      const cc = c = chaosCluster(prefix('cs'))
      await startImage(cc, 1)
      const cli = spawn(process.execPath, [BIN, 'migrate', 'vm', '--to', cc.addr(2), '--node', cc.dataDir(1), '--lanes', '2', '--downtime-target', '4000', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stderr = ''
      cli.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
      const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => cli.once('exit', (code, signal) => { resolve({ code, signal }) }))
      // Mid pre-copy: the source says it is migrating and a quarter of the memory reached the destination.
      await until('the migration to be in pre-copy with data arriving', async () => {
        const img = (await cc.status(1)).images.find(i => i.spec.name === 'vm')
        return img?.state === 'migrating' && img.migration?.phase === 'precopy' && stagedBytes(cc, 2) > 8 * MiB ? true : undefined
      }, 30_000, 50)
      cli.kill(sig)
      const exit = await exited
      console.info(`[chaos] ${sig} of the CLI: exit ${JSON.stringify(exit)}; stderr ${JSON.stringify(stderr.trim().split('\n').slice(-1)[0])}`)
      if (sig === 'SIGINT') {
        expect(exit.code).toBe(130)
        expect(stderr).toMatch(/migration cancelled; the workload keeps running on the source/)
      } else {
        expect(exit.signal).toBe('SIGTERM')
      }
      // The node noticed the hang-up and aborted; it is not migrating any more.
      await until('the source to stop migrating', async () => (await cc.image(1, 'vm'))?.state !== 'migrating' ? true : undefined)
      const { outcome, detail } = await outcomeOf(cc, 'vm', 1, 2)
      console.info(`[chaos] ${sig} of the CLI: outcome ${outcome} (${detail})`)
      expect(outcome).toBe('source')
      await expectNoLeftovers(cc)
    })
  }

  const nodeCases = [
    ['SIGINT', 'source', 'precopy'], ['SIGTERM', 'source', 'precopy'], ['SIGTERM', 'source', 'switchover'],
    ['SIGINT', 'destination', 'precopy'], ['SIGTERM', 'destination', 'precopy'], ['SIGTERM', 'destination', 'switchover']
  ] as const
  for (const [sig, victim, phase] of nodeCases) {
    it(`${sig} of the ${victim} node at ${phase}: the migration ends cleanly, the source's image is kept`, async () => {
      const cc = c = chaosCluster(prefix('cn'))
      const [src, dst] = [1, 2]
      const v = victim === 'source' ? src : dst
      await startImage(cc, src)
      const pid = cc.nodePid(v)
      let struck: string | undefined
      const m = migrateWatched(cc, src, { ...MIGRATE, to: cc.addr(dst) }, (p) => {
        if (struck == null && strikesAt(phase, p)) { process.kill(pid, sig); struck = p.phase }
      })
      // Bounded: a migration that outlives its peer by a minute is a hang (the source may be paused).
      const result = await Promise.race([m.done, new Promise<never>((_resolve, reject) => {
        setTimeout(() => {
          void cc.image(src, 'vm').then(img => {
            reject(new Error(`the migration did not end within 60 s of ${sig} to the ${victim} node at ${phase} (phases ${m.phases.join('>')}; ${victim} node alive: ${String(cc.nodeAlive(v))}; source image ${JSON.stringify(img)}`))
          }, (err: Error) => { reject(err) })
        }, 60_000).unref()
      })])
      expect(struck, `never reached ${phase}: ${m.phases.join(' → ')}`).toBe(phase)
      // A stopping node finishes by itself (bounded): it must not hang.
      await until(`the ${victim} node to exit after ${sig}`, () => cc.nodeAlive(v) ? undefined : true, 30_000, 50)
      cc.restartNode(v)
      let found = await outcomeOf(cc, 'vm', src, dst).catch((err: Error) => err)
      let note = ''
      if (found instanceof Error && victim === 'source') {
        // A node that stops gracefully stops its workloads (ShoalNode.stop): after the restart the
        // image is hosted, stopped, and must start again intact (its verifier runs in outcomeOf).
        const img = await cc.image(src, 'vm')
        note = `after restart the source image was ${String(img?.state)}; `
        if (img?.state === 'stopped') {
          await call(cc.socket(src), 'POST', '/images/vm/start')
          found = await outcomeOf(cc, 'vm', src, dst)
        }
      }
      if (found instanceof Error) throw found
      console.info(`[chaos] ${sig} of the ${victim} node at ${phase}: phases ${m.phases.join('>')}; result ${result.type}${'code' in result && result.code != null ? ` ${result.code}` : ''}; ${note}outcome ${found.outcome} (${found.detail})`)
      expect(found.outcome).toBe('source')
      await expectNoLeftovers(cc)
    })
  }
})
