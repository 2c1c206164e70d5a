import { readFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { chaosCluster, expectNoLeftovers, MIGRATE, migrateWatched, outcomeOf, PHASES, prefix, processesMentioning, startImage, strikesAt } from '../fixtures/chaos.js'
import { teardownCase } from '../fixtures/chaos.js'
import { keepLogs } from '../fixtures/chaos.js'
import type { ChaosCluster, Outcome } from '../fixtures/chaos.js'
import { netnsUnavailable } from '../fixtures/netns.js'

const unavailable = netnsUnavailable()
if (unavailable != null) console.warn(`skipping the chaos suite (kill -9): ${unavailable}`)

describe.skipIf(unavailable != null)('chaos: kill -9 of a node at each phase of a migration', () => {
  let c: ChaosCluster | undefined
  afterEach(() => {
    if (c != null) teardownCase(c)
    c = undefined
  })

  for (const victim of ['destination', 'source'] as const) {
    for (const phase of PHASES) {
      it(`kill -9 of the ${victim} node at ${phase}`, async () => {
        const cc = c = chaosCluster(prefix('ck'))
        const [src, dst] = [1, 2]
        const v = victim === 'source' ? src : dst
        await startImage(cc, src)
        const victimPid = cc.nodePid(v)
        let killedAt: string | undefined
        let killedMs = 0
        const m = migrateWatched(cc, src, { ...MIGRATE, to: cc.addr(dst) }, (p) => {
          if (killedAt == null && strikesAt(phase, p)) {
            process.kill(victimPid, 'SIGKILL')
            killedAt = p.phase
            killedMs = Date.now()
          }
        })
        const result = await m.done
        const endedMs = Date.now() - killedMs
        expect(killedAt, `never reached ${phase}: phases ${m.phases.join(' → ')}; ${JSON.stringify(result)}`).toBe(phase)
        await cc.signalNode(v, 'SIGKILL').catch(() => {}) // already dead: wait until it is gone
        // Where the source really was when it died: its record says, before anything restarts.
        let persisted: string | undefined
        if (victim === 'source') {
          try {
            const rec = JSON.parse(readFileSync(`${cc.dataDir(src)}/images/vm/image.json`, 'utf8')) as { state: string, migration?: { phase: string } }
            persisted = rec.migration?.phase ?? rec.state
          } catch { persisted = 'gone' }
        }
        cc.restartNode(v)
        const { outcome, detail } = await outcomeOf(cc, 'vm', src, dst)
        // Before the COMMIT went out the source must be running; after it, the destination runs
        // the image or the source keeps it paused and in-doubt (never both running).
        const commitOut = victim === 'source' ? persisted === 'commit' || persisted === 'gone' : m.phases.includes('commit') || m.phases.includes('done')
        const allowed: Outcome[] = commitOut ? ['destination', 'in-doubt'] : ['source']
        console.info(`[chaos] kill -9 ${victim} at ${phase}: phases ${m.phases.join('>')}; ${victim === 'source' ? `source record ${String(persisted)}; ` : ''}result ${result.type}${'code' in result && result.code != null ? ` ${result.code}` : ''} ${endedMs} ms after the kill; outcome ${outcome} (${detail})`)
        expect(allowed).toContain(outcome)
        if (result.type === 'report') expect(result.report.verified).toBe(true)
        await expectNoLeftovers(cc)
      })
    }
  }
})
