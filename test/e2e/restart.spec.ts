import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { api, runNode } from '../fixtures/node-process.js'
import type { NodeProc } from '../fixtures/node-process.js'
import { tempDir } from '../fixtures/temp.js'
const MiB = 1024 * 1024

/** Pids of processes whose command line names `path` (the workload writers of one image). */
function writersOf (path: string): number[] {
  const out: number[] = []
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const args = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0')
      const state = readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1]?.[0]
      if (args.includes(path) && state !== 'Z') out.push(Number(d))
    } catch {}
  }
  return out
}

/** The process state letter (R, S, T for stopped, ...). */
function procState (pid: number): string | undefined {
  try { return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] } catch { return undefined }
}

async function kill9 (n: NodeProc): Promise<void> {
  const e = new Promise(resolve => n.proc.once('exit', resolve))
  n.proc.kill('SIGKILL')
  await e
}

describe('a node restarted after a crash', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })

  /** A data dir and shm dir whose leftover workload processes are killed at the end. */
  const dirs = (): { dir: string, shm: string } => {
    const d = tempDir('restart')
    const s = tempDir('restart-shm', '/dev/shm')
    cleanups.push(d.cleanup, s.cleanup, () => { for (const p of writersOf(`${s.path}/vm.mem`)) process.kill(p, 'SIGKILL') })
    return { dir: d.path, shm: s.path }
  }

  it('refuses a second node on the same data dir (ERR_DATA_DIR_LOCKED), and takes the dir over after a kill -9', async () => {
    const { dir, shm } = dirs()
    const a = await runNode(dir, shm, '127.0.0.1', cleanups)
    const err = await runNode(dir, shm, '127.0.0.1', cleanups).then(() => undefined, (e: { stderr: string }) => e.stderr)
    expect(err).toMatch(/ERR_DATA_DIR_LOCKED/)
    expect(err).toContain(`process ${a.proc.pid}`)
    // The first node is untouched by the attempt.
    expect((await api(dir, 'GET', '/status')).body.peerId).toBe(a.peerId)
    await kill9(a)
    // A crashed node holds no lock: the kernel released it with the process.
    const b = await runNode(dir, shm, '127.0.0.1', cleanups)
    expect(b.peerId).toBe(a.peerId)
  })

  it('takes back a workload that kept running, so starting the image again makes no second writer, and it still migrates verified', async () => {
    const { dir, shm } = dirs()
    const a = await runNode(dir, shm, '127.0.0.1', cleanups)
    expect((await api(dir, 'POST', '/images', { name: 'vm', memorySize: 8 * MiB, cacheSize: 8 * MiB })).status).toBe(200)
    const started = (await api(dir, 'POST', '/images/vm/start')).body
    const pid = (await api(dir, 'GET', '/status')).body.images[0].pid as number
    expect(started.state).toBe('running')
    expect(writersOf(`${shm}/vm.mem`)).toEqual([pid])
    await kill9(a)
    expect(procState(pid)).toMatch(/[RS]/)
    await runNode(dir, shm, '127.0.0.1', cleanups)
    const img = (await api(dir, 'GET', '/status')).body.images[0]
    expect(img.state).toBe('running')
    expect(img.pid).toBe(pid)
    expect((await api(dir, 'POST', '/images/vm/start')).status).toBe(200)
    expect(writersOf(`${shm}/vm.mem`)).toEqual([pid])
    // The adopted workload is driven as before: a migration pauses it, verifies and moves it.
    const other = dirs()
    const dst = await runNode(other.dir, other.shm, '127.0.0.2', cleanups)
    await api(other.dir, 'POST', '/allow', { peerId: (await api(dir, 'GET', '/status')).body.peerId })
    const out = await api(dir, 'POST', '/migrate', { image: 'vm', to: dst.addrs[0] })
    expect(out.body.type).toBe('report')
    expect(out.body.report.verified).toBe(true)
    expect((await api(other.dir, 'GET', '/status')).body.images[0].arrivalCheck.ok).toBe(true)
    for (const p of writersOf(`${other.shm}/vm.mem`)) process.kill(p, 'SIGKILL')
  })

  /**
   * What a node's crash inside a migration leaves: the image's record says migrating at `phase`,
   * and the workload process is stopped (paused or in a throttle cycle). Then the node restarts.
   */
  const crashedMidMigration = async (phase: 'paused' | 'commit'): Promise<{ dir: string, shm: string, pid: number }> => {
    const { dir, shm } = dirs()
    const a = await runNode(dir, shm, '127.0.0.1', cleanups)
    await api(dir, 'POST', '/images', { name: 'vm', memorySize: 8 * MiB, cacheSize: 8 * MiB })
    await api(dir, 'POST', '/images/vm/start')
    const pid = (await api(dir, 'GET', '/status')).body.images[0].pid as number
    const recPath = `${dir}/images/vm/image.json`
    const rec = JSON.parse(readFileSync(recPath, 'utf8'))
    await kill9(a)
    writeFileSync(recPath, JSON.stringify({ ...rec, state: 'migrating', migration: { to: '12D3KooWxxx', phase } }))
    process.kill(pid, 'SIGSTOP')
    await expect.poll(() => procState(pid)).toBe('T')
    await runNode(dir, shm, '127.0.0.1', cleanups)
    return { dir, shm, pid }
  }

  it('a node killed in the middle of a migration resumes the workload it had paused or throttled when it restarts', async () => {
    const { dir, pid } = await crashedMidMigration('paused')
    const img = (await api(dir, 'GET', '/status')).body.images[0]
    expect(img.state).toBe('running')
    expect(img.migration).toBeUndefined()
    await expect.poll(() => procState(pid)).toMatch(/[RS]/)
  })

  it('keeps a workload paused and in-doubt when the crash came after the COMMIT went out; start needs --force', async () => {
    const { dir, shm, pid } = await crashedMidMigration('commit')
    const img = (await api(dir, 'GET', '/status')).body.images[0]
    expect(img.state).toBe('in-doubt')
    expect(procState(pid)).toBe('T')
    const refused = await api(dir, 'POST', '/images/vm/start')
    expect(refused.body.error.code).toBe('ERR_IMAGE_STATE')
    expect(refused.body.error.message).toMatch(/--force/)
    expect(writersOf(`${shm}/vm.mem`)).toEqual([pid])
    const forced = await api(dir, 'POST', '/images/vm/start?force=1')
    expect(forced.body.state).toBe('running')
    await expect.poll(() => procState(pid)).toMatch(/[RS]/)
    expect(writersOf(`${shm}/vm.mem`)).toEqual([pid])
  })

  it('with --keep-workloads, SIGTERM of the source node mid-migration cancels it, leaves the workload running, and the restarted node takes it back', async () => {
    const { dir, shm } = dirs()
    const a = await runNode(dir, shm, '127.0.0.1', cleanups, ['--keep-workloads'])
    await api(dir, 'POST', '/images', { name: 'vm', memorySize: 32 * MiB, cacheSize: 8 * MiB, fill: 'random' })
    await api(dir, 'POST', '/images/vm/start')
    const pid = (await api(dir, 'GET', '/status')).body.images[0].pid as number
    const other = dirs()
    const dst = await runNode(other.dir, other.shm, '127.0.0.2', cleanups)
    await api(other.dir, 'POST', '/allow', { peerId: a.peerId })
    // A slow migration, stopped by SIGTERM while it copies.
    const migrating = api(dir, 'POST', '/migrate', { image: 'vm', to: dst.addrs[0], maxRate: 4 * MiB }).catch((err: Error) => ({ status: 0, body: { error: err.message } }))
    await expect.poll(async () => (await api(other.dir, 'GET', '/status')).body.incoming, { timeout: 20_000 }).toBe(1)
    const exited = new Promise(resolve => a.proc.once('exit', resolve))
    a.proc.kill('SIGTERM')
    await exited
    await migrating
    expect(procState(pid)).toMatch(/[RS]/)
    await expect.poll(async () => (await api(other.dir, 'GET', '/status')).body.incoming, { timeout: 20_000 }).toBe(0)
    expect((await api(other.dir, 'GET', '/status')).body.images).toEqual([])
    await runNode(dir, shm, '127.0.0.1', cleanups, ['--keep-workloads'])
    const img = (await api(dir, 'GET', '/status')).body.images[0]
    expect(img.state).toBe('running')
    expect(img.pid).toBe(pid)
    expect(writersOf(`${shm}/vm.mem`)).toEqual([pid])
  })
})
