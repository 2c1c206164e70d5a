import { spawn } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { KVM_PROBE_TIMEOUT_MS } from './constants.js'

const probes = new Map<string, Promise<boolean>>()

/**
 * Whether KVM really runs guests here. `/dev/kvm` opening is not enough: on some hosts (nested
 * virtualisation, e.g. this project's CI machines) KVM creates VMs whose vCPU hangs in early
 * boot. The probe boots the guest's own kernel under KVM with no disk and no init, and waits for
 * it to get to the end of its boot (the panic for want of a root file system); a kernel that
 * does not get there within the timeout means TCG. The
 * answer is kept per (binary, kernel) for the life of the process.
 */
export async function kvmWorks (binary: string, kernel: string, timeoutMs = KVM_PROBE_TIMEOUT_MS): Promise<boolean> {
  const key = `${binary}\0${kernel}`
  let p = probes.get(key)
  if (p == null) {
    p = probe(binary, kernel, timeoutMs)
    probes.set(key, p)
  }
  return await p
}

async function probe (binary: string, kernel: string, timeoutMs: number): Promise<boolean> {
  try { accessSync('/dev/kvm', constants.R_OK | constants.W_OK) } catch { return false }
  const child = spawn(binary, ['-machine', 'pc,accel=kvm', '-m', '128M', '-nodefaults', '-no-user-config', '-display', 'none',
    '-kernel', kernel, '-append', 'console=ttyS0 panic=-1', '-serial', 'stdio', '-no-reboot'], { stdio: ['ignore', 'pipe', 'ignore'] })
  return await new Promise<boolean>((resolve) => {
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      if (child.exitCode == null && child.signalCode == null) child.kill('SIGKILL')
      resolve(ok)
    }
    const timer = setTimeout(() => { done(false) }, timeoutMs)
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1')
      if (out.includes('Kernel panic')) done(true)
    })
    child.once('exit', () => { done(out.includes('Kernel panic')) })
    child.once('error', () => { done(false) })
  })
}
