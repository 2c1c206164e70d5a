// A node killed with SIGKILL leaves its VMs running (as a hypervisor's management daemon must);
// the restarted node adopts them through their QMP sockets instead of starting a second copy.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { call } from '@shoal/cli'
import { buildTestGuest, checkTestGuest, isQemuProcess, testGuestConfig } from '@shoal/driver-qemu'
import type { TestGuest } from '@shoal/driver-qemu'
import type { NodeStatus } from '@shoal/node'
import { tempDir } from '../fixtures/temp.js'

const MiB = 2 ** 20
const BIN = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url))
let guest: TestGuest

describe('a restarted node adopts the VMs that kept running', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c() })
  beforeAll(async () => { guest = await buildTestGuest() }, 900_000)

  const startNode = async (data: string, shm: string): Promise<ChildProcess> => {
    const child = spawn(process.execPath, [BIN, 'node', '--data-dir', data, '--shm-dir', shm, '--listen', '/ip4/127.0.0.1/tcp/0', '--workers', '1'], { stdio: ['ignore', 'pipe', 'ignore'] })
    cleanups.push(async () => { if (child.exitCode == null && child.signalCode == null) { const e = new Promise(resolve => child.once('exit', resolve)); child.kill('SIGTERM'); await e } })
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', () => { resolve() })
      child.once('exit', (code) => { reject(new Error(`node exited with ${code}`)) })
    })
    return child
  }

  it('keeps the VM through kill -9 of its node, adopts it on restart, and stops it on image rm', async () => {
    const data = tempDir('adopt')
    const shm = tempDir('adopt-shm', '/dev/shm')
    let pid = 0
    cleanups.push(data.cleanup, shm.cleanup, () => { if (pid > 0 && isQemuProcess(pid)) process.kill(pid, 'SIGKILL') })
    const sock = join(data.path, 'control.sock')
    const first = await startNode(data.path, shm.path)
    await call(sock, 'POST', '/images', {
      name: 'vm1', driver: 'qemu', memorySize: 128 * MiB, cacheSize: 32 * MiB,
      config: { ...testGuestConfig(guest, 128 * MiB, { memMiB: 32, rate: 1000, records: 10 }), accel: 'tcg' }
    })
    await call(sock, 'POST', '/images/vm1/start')
    const before = (await call(sock, 'GET', '/status') as NodeStatus).images[0]!
    pid = before.pid!
    const runDir = before.runtime!.runDir as string
    const v0 = await checkTestGuest(runDir)
    expect(v0.ok, v0.line).toBe(true)

    const gone = new Promise(resolve => first.once('exit', resolve))
    first.kill('SIGKILL')
    await gone
    expect(isQemuProcess(pid)).toBe(true) // the VM outlives its node
    await new Promise(resolve => setTimeout(resolve, 500))

    await startNode(data.path, shm.path)
    const after = (await call(sock, 'GET', '/status') as NodeStatus).images[0]!
    expect(after.state).toBe('running')
    expect(after.pid).toBe(pid) // adopted, not a second VM
    const v1 = await checkTestGuest(runDir)
    expect(v1.ok, v1.line).toBe(true)
    expect(v1.writes).toBeGreaterThan(v0.writes)
    // Starting it again changes nothing: it runs already.
    expect(((await call(sock, 'POST', '/images/vm1/start')) as { state: string }).state).toBe('running')
    expect((await call(sock, 'GET', '/status') as NodeStatus).images[0]!.pid).toBe(pid)

    await call(sock, 'DELETE', '/images/vm1')
    const until = Date.now() + 10_000
    while (isQemuProcess(pid) && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 50))
    expect(isQemuProcess(pid)).toBe(false)
  })
})
