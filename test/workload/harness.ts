/**
 * Helpers shared by the workload specs: unique temp images that are always removed, and real
 * `shoal-workload` processes that are always killed.
 */

import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { workloadBinPath } from '@shoal/workload'

// tmpfs when available: it is where real images live and keeps the tests off the disk.
const TEMP_ROOT = existsSync('/dev/shm') ? '/dev/shm' : tmpdir()
let counter = 0

/** Paths of one test image. */
export interface TempImage {
  memoryPath: string
  cachePath: string
  opsPath: string
  /** `memoryPath`/`cachePath` style arguments for the CLI. */
  args: string[]
  /** A further unique path in the same place (for copies). */
  extra: (suffix: string) => string
}

const created: string[] = []

/** Reserves unique paths; {@link removeTempFiles} deletes everything reserved so far. */
export function tempImage (): TempImage {
  const base = join(TEMP_ROOT, `shoal-workload-test-${process.pid}-${Date.now()}-${counter++}`)
  const extra = (suffix: string): string => {
    created.push(`${base}.${suffix}`)
    return `${base}.${suffix}`
  }
  const memoryPath = extra('mem')
  const cachePath = extra('cache')
  return { memoryPath, cachePath, opsPath: extra('ops'), args: ['--memory-path', memoryPath, '--cache-path', cachePath], extra }
}

/** Deletes every file reserved by {@link tempImage} (missing ones are fine). */
export async function removeTempFiles (): Promise<void> {
  const paths = created.splice(0)
  await Promise.all(paths.map(async (path) => { await rm(path, { force: true }) }))
}

/** A spawned workload process. */
export interface WorkloadProcess {
  child: ChildProcess
  /** Resolves on the `{"event":"ready"}` line. */
  ready: Promise<{ pid: number }>
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>
  stdout: () => string
  stderr: () => string
}

// Children not yet closed, with their exit promise, so that a failed test never leaks one.
const running = new Map<ChildProcess, Promise<number | null>>()

/** Spawns `node dist/bin.js ...args`. */
export function spawnWorkload (args: string[]): WorkloadProcess {
  const child = spawn(process.execPath, [workloadBinPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  // 'close' rather than 'exit': it comes after stdout/stderr are drained.
  const exited = new Promise<number | null>((resolve) => {
    child.on('close', (code) => {
      running.delete(child)
      resolve(code)
    })
  })
  running.set(child, exited)
  const ready = new Promise<{ pid: number }>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
      for (const line of stdout.split('\n')) {
        if (line.includes('"ready"')) resolve(JSON.parse(line) as { pid: number })
      }
    })
    void exited.then((code) => { reject(new Error(`workload exited (${code}) before ready: ${stderr}`)) })
  })
  return { child, ready, exited, stdout: () => stdout, stderr: () => stderr }
}

/** Kills every workload still running (after a failed test). */
export async function killWorkloads (): Promise<void> {
  await Promise.all([...running].map(async ([child, exited]) => {
    child.kill('SIGKILL')
    await exited
  }))
}

/** Runs the CLI to completion. */
export async function runCli (args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const proc = spawnWorkload(args)
  proc.ready.catch(() => undefined)
  const code = await proc.exited
  return { code, stdout: proc.stdout(), stderr: proc.stderr() }
}

/** Sends SIGTERM and waits for the exit code. */
export async function terminate (proc: WorkloadProcess): Promise<number | null> {
  proc.child.kill('SIGTERM')
  return await proc.exited
}

export async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}
