import { createServer, connect } from 'node:net'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { TimeoutError, WorkloadError } from '@shoal/core'
import { DEVICE_STATE_TIMEOUT_MS, POLL_MS } from './constants.js'
import type { QmpClient } from './qmp-client.js'

/** First bytes of a QEMU migration stream: 'QEVM' and version 3. */
export const QEMU_STREAM_MAGIC = Buffer.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3])

/** Whether bytes look like a QEMU migration stream. */
export function isQemuStream (state: Uint8Array): boolean {
  return state.byteLength > QEMU_STREAM_MAGIC.length && Buffer.from(state.buffer, state.byteOffset, QEMU_STREAM_MAGIC.length).equals(QEMU_STREAM_MAGIC)
}

/**
 * Migration settings of every Shoal VM, set right after it starts (on both sides, as QEMU
 * requires): `x-ignore-shared` leaves the RAM (a shared file Shoal moves itself) out of QEMU's
 * stream, so the stream is the device state alone; no bandwidth cap on that stream.
 */
export async function setMigrationCaps (qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] })
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 1024 ** 4 })
}

interface MigrateInfo { status?: string, 'error-desc'?: string }

async function waitMigration (qmp: QmpClient, deadline: number): Promise<void> {
  for (;;) {
    const info = await qmp.execute<MigrateInfo>('query-migrate')
    if (info.status === 'completed') return
    if (info.status === 'failed' || info.status === 'cancelled') throw new WorkloadError(`QEMU migration ${info.status}: ${info['error-desc'] ?? 'no reason given'}`)
    if (Date.now() > deadline) throw new TimeoutError('QEMU did not finish its device state in time')
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
}

/**
 * Captures a stopped VM's device state: QEMU's own migration stream with `x-ignore-shared`
 * (devices, CPU, ROMs; not the shared RAM), read from a unix socket QEMU connects to. QEMU
 * flushes and inactivates its disks when the stream completes; `cont` takes them back.
 */
export async function saveDeviceState (qmp: QmpClient, runDir: string): Promise<Uint8Array> {
  const path = join(runDir, 'state-out.sock')
  rmSync(path, { force: true })
  const server = createServer()
  const chunks: Buffer[] = []
  const received = new Promise<void>((resolve, reject) => {
    server.once('connection', (sock) => {
      sock.on('data', (d: Buffer) => chunks.push(d))
      sock.once('end', resolve)
      sock.once('error', reject)
    })
  })
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(path, resolve) })
  const deadline = Date.now() + DEVICE_STATE_TIMEOUT_MS
  let timer: NodeJS.Timeout | undefined
  try {
    await qmp.execute('migrate', { uri: `unix:${path}` })
    await Promise.race([received, new Promise((_resolve, reject) => { timer = setTimeout(() => { reject(new TimeoutError('device state stream did not end')) }, DEVICE_STATE_TIMEOUT_MS) })])
    await waitMigration(qmp, deadline)
  } finally {
    clearTimeout(timer)
    server.close()
    rmSync(path, { force: true })
  }
  return Buffer.concat(chunks)
}

/**
 * Loads a device state into a VM started with `-incoming defer -S`: QEMU listens on a unix
 * socket (`migrate-incoming`), the state is written into it, and the VM is left paused.
 */
export async function loadDeviceState (qmp: QmpClient, runDir: string, state: Uint8Array): Promise<void> {
  const path = join(runDir, 'state-in.sock')
  rmSync(path, { force: true })
  await qmp.execute('migrate-incoming', { uri: `unix:${path}` })
  const deadline = Date.now() + DEVICE_STATE_TIMEOUT_MS
  try {
    await new Promise<void>((resolve, reject) => {
      const sock = connect(path)
      sock.once('error', reject)
      sock.once('connect', () => { sock.end(Buffer.from(state.buffer, state.byteOffset, state.byteLength)) })
      sock.once('close', () => { resolve() })
    })
    // An incoming migration that fails makes QEMU exit: the QMP call then rejects.
    for (;;) {
      const s = await qmp.execute<{ status: string }>('query-status')
      if (s.status !== 'inmigrate') {
        if (s.status !== 'paused' && s.status !== 'running') throw new WorkloadError(`VM is ${s.status} after loading its device state`)
        return
      }
      if (Date.now() > deadline) throw new TimeoutError('QEMU did not load the device state in time')
      await new Promise(resolve => setTimeout(resolve, POLL_MS))
    }
  } finally {
    rmSync(path, { force: true })
  }
}
