import { execFileSync } from 'node:child_process'
import { rmSync, statfsSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { chaosCluster, expectNoLeftovers, IMAGE, MIGRATE, migrateWatched, MiB, outcomeOf, prefix, processesMentioning, startImage } from '../fixtures/chaos.js'
import { teardownCase } from '../fixtures/chaos.js'
import { keepLogs } from '../fixtures/chaos.js'
import type { ChaosCluster } from '../fixtures/chaos.js'
import { netnsUnavailable } from '../fixtures/netns.js'

const unavailable = netnsUnavailable()
if (unavailable != null) console.warn(`skipping the chaos suite (disk full): ${unavailable}`)

describe.skipIf(unavailable != null)('chaos: the destination runs out of space during the copy', () => {
  let c: ChaosCluster | undefined
  afterEach(() => {
    if (c != null) teardownCase(c)
    c = undefined
  })

  // The cache's staging lives in <data>/incoming, the memory's in the shm dir: each gets a tmpfs
  // that admits the image (the node's margin included) and is then filled by something else.
  for (const where of ['data dir (incoming cache staging)', 'shm dir (incoming memory staging)'] as const) {
    it(`a full ${where} ends the migration with ERR_NO_SPACE; the source keeps running; no staging is left`, async () => {
      const cc = c = chaosCluster(prefix('cd'))
      const shm = where.startsWith('shm')
      // Admission keeps max(128 MiB, 2%) free in the shm dir; the data dir is checked at its root, not at incoming/.
      const mnt = shm ? cc.shmDir(2) : `${cc.dataDir(2)}/incoming`
      cc.mountTmpfs(2, mnt, shm ? 200 : 64)
      const view = cc.nodeView(2, mnt)
      const hog = `${view}/hog`
      const spec = { ...IMAGE, cacheSize: 24 * MiB }
      await startImage(cc, 1, spec)
      let filled = false
      let fillError: string | undefined
      const m = migrateWatched(cc, 1, { ...MIGRATE, to: cc.addr(2) }, (p) => {
        if (!filled && p.phase === 'precopy' && p.bytes > 4 * MiB) {
          filled = true
          // Something else on the host takes every free byte (the staging grows meanwhile: retry
          // with what is left until nothing is).
          for (let i = 0; i < 20; i++) {
            const free = statfsSync(view)
            if (free.bavail === 0) break
            try {
              execFileSync('fallocate', ['-l', String(free.bavail * free.bsize), `${hog}${i}`], { stdio: 'pipe' })
            } catch (err) { fillError = (err as Error).message }
          }
        }
      })
      const result = await m.done
      expect(filled).toBe(true)
      if (fillError != null) console.info(`[chaos] full ${where}: filling raced with the staging: ${fillError}`)
      console.info(`[chaos] full ${where}: phases ${m.phases.join('>')}; result ${JSON.stringify({ ...result, report: undefined })}`)
      expect(result.type).toBe('error')
      expect(result.type === 'error' && result.code).toBe('ERR_NO_SPACE')
      expect(result.type === 'error' && result.message).not.toMatch(/no usable lane/)
      for (let i = 0; i < 20; i++) rmSync(`${hog}${i}`, { force: true })
      const { outcome, detail } = await outcomeOf(cc, 'vm', 1, 2)
      console.info(`[chaos] full ${where}: outcome ${outcome} (${detail})`)
      expect(outcome).toBe('source')
      await expectNoLeftovers(cc)
    })
  }
})
