// The node under fuzz: a real `shoal node` process (the CLI), its RSS from /proc, the bytes under
// its data and shm dirs (du, apparent and allocated), and a cleanup that runs on every exit path.
import { spawn, execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const cliBin = join(here, '..', '..', 'packages', 'cli', 'dist', 'bin.js')

/** VmRSS (or another field) of a process in MB; undefined once it is gone. */
export function procStatusMb (pid, field = 'VmRSS') {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m == null ? undefined : Number(m[1]) / 1024
  } catch { return undefined }
}

/** PIDs of every descendant of `pid` (scan of /proc, parent links from /proc/<p>/stat). */
export function descendants (pid) {
  const children = new Map()
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (!children.has(ppid)) children.set(ppid, [])
      children.get(ppid).push(Number(d))
    } catch {}
  }
  const out = []
  const walk = (p) => { for (const c of children.get(p) ?? []) { out.push(c); walk(c) } }
  walk(pid)
  return out
}

/** Bytes under `dirs` as `du` counts them: apparent size and allocated blocks. */
export async function diskUsage (dirs) {
  const run = (args) => new Promise((resolve) => {
    // du exits 1 when a file vanishes under it (staging being discarded): the total is still printed.
    execFile('du', [...args, '-s', '-c', '-B1', ...dirs.filter(d => existsSync(d))], (_err, stdout) => {
      const m = /^(\d+)\s+total$/m.exec(stdout ?? '')
      resolve(m == null ? 0 : Number(m[1]))
    })
  })
  const [apparent, allocated] = await Promise.all([run(['--apparent-size']), run([])])
  return { apparent, allocated }
}

/**
 * Starts `shoal node` (the CLI) on loopback with `allow` on its allow-list, in fresh temp data and
 * shm dirs. Returns its pid, peer id and addresses; `restart()` starts it again on the same dirs
 * (same identity) after a crash; `cleanup()` kills it and removes both dirs.
 */
export async function startTarget ({ allow, onExit }) {
  const dataDir = mkdtempSync(join(tmpdir(), 'shoal-fuzz-data-'))
  const shmDir = mkdtempSync(join('/dev/shm', 'shoal-fuzz-shm-'))
  const stderrTail = []
  let child
  let stopping = false

  const launch = async () => {
    child = spawn(process.execPath, [cliBin, 'node', '--data-dir', dataDir, '--shm-dir', shmDir, '--listen', '/ip4/127.0.0.1/tcp/0', '--allow', allow, '--workers', '1'], { stdio: ['ignore', 'pipe', 'pipe'] })
    const me = child
    createInterface({ input: me.stderr }).on('line', (l) => { stderrTail.push(l); if (stderrTail.length > 200) stderrTail.shift() })
    const listening = new Promise((resolve, reject) => {
      createInterface({ input: me.stdout }).on('line', (l) => {
        try { const m = JSON.parse(l); if (m.event === 'listening') resolve(m) } catch {}
      })
      me.once('exit', (code, signal) => reject(new Error(`node exited before listening (${code ?? signal}): ${stderrTail.slice(-5).join('\n')}`)))
    })
    me.once('exit', (code, signal) => { if (!stopping) onExit?.({ code, signal, stderr: stderrTail.slice(-40) }) })
    const info = await listening
    return { pid: me.pid, peerId: info.peerId, addrs: info.addrs }
  }

  const kill = () => { stopping = true; if (child != null && child.exitCode == null && child.signalCode == null) { for (const p of descendants(child.pid)) { try { process.kill(p, 'SIGKILL') } catch {} } child.kill('SIGKILL') } }
  const cleanup = () => {
    kill()
    rmSync(dataDir, { recursive: true, force: true })
    rmSync(shmDir, { recursive: true, force: true })
  }
  process.on('exit', cleanup)

  const info = await launch()
  return {
    ...info,
    dataDir,
    shmDir,
    controlSocket: join(dataDir, 'control.sock'),
    get pid () { return child.pid },
    get alive () { return child.exitCode == null && child.signalCode == null },
    stderrTail,
    async restart () { stopping = false; return await launch() },
    /** Stops it gracefully (SIGTERM, then SIGKILL after 5 s). */
    async stop () {
      stopping = true
      if (child.exitCode != null || child.signalCode != null) return
      const exited = new Promise(resolve => child.once('exit', resolve))
      child.kill('SIGTERM')
      const t = setTimeout(kill, 5000)
      await exited
      clearTimeout(t)
    },
    cleanup
  }
}
