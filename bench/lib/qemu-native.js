// The baseline of the QEMU benchmarks: QEMU's own live migration of RAM plus its local cache disk,
// the way libvirt does `virsh migrate --live --copy-storage-all` (optionally `--parallel
// --parallel-connections 4`), driven over QMP between two QEMUs in two network namespaces.
//
// What libvirt does, and this file mirrors (libvirt src/qemu/qemu_migration.c, qemu_migration_params.c):
//  - destination (Prepare): QEMU started paused with `-incoming defer`; capability
//    `late-block-activate` (libvirt's "always on" destination capability); `multifd` + channels when
//    parallel; `nbd-server-start` on the migration address, `block-export-add` type nbd, writable,
//    export name = the disk's alias (qemuMigrationDstStartNBDServer); `migrate-incoming tcp:`.
//  - source (Perform, qemuMigrationSrcRun): capability `pause-before-switchover` (libvirt's "always
//    on" source capability); `max-bandwidth` = libvirt's "unlimited" (QEMU_DOMAIN_MIG_BANDWIDTH_MAX
//    MiB/s = INT64_MAX rounded down to a MiB); `downtime-limit` left at QEMU's default (libvirt only
//    sets it on `virsh migrate-setmaxdowntime`), which is 300 ms; `blockdev-add` of an nbd node for
//    the destination's export and `blockdev-mirror` sync=full into it (qemuMigrationSrcNBDStorageCopy),
//    wait until every mirror is ready; `migrate tcp:`; when the migration pauses in `pre-switchover`
//    (CPUs stopped, RAM sent, block devices still active), `block-job-cancel` (not forced) of the
//    ready mirror, which completes it with source and target in sync (qemuMigrationSrcNBDCopyCancel),
//    `blockdev-del` of the nbd node, then `migrate-continue pre-switchover` and wait for `completed`.
//  - destination (Finish): `nbd-server-stop`, `cont`.
import { spawn, spawnSync } from 'node:child_process'
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import {
  QmpClient, checkTestGuest, linkImageFiles, logSize, qemuArgs, testGuestConfig, validateQemuConfig,
  vmPaths, waitForLine
} from '@shoal/driver-qemu'

/** libvirt's default `max-bandwidth` (bytes/s): QEMU_DOMAIN_MIG_BANDWIDTH_MAX = INT64_MAX / 2^20 MiB/s, i.e. unlimited (exact as a double). */
export const LIBVIRT_MAX_BANDWIDTH = 2 ** 63 - 2 ** 20
/** QEMU's default `downtime-limit` (ms); libvirt does not change it unless asked. */
export const QEMU_DEFAULT_DOWNTIME_LIMIT_MS = 300

const NBD_PORT = 10809
const MIGRATION_PORT = 49152 // libvirt's first migration port
const DISK_ID = 'cache0' // the -drive id of qemuArgs' cache disk (libvirt's disk alias)
const JOB_ID = 'migration-cache0'
const NBD_NODE = 'migration-cache0-storage'
// Rates for timeouts: far below what a 200 Mbit/s link moves, so a slow but progressing run never
// times out; a stalled one does, in time proportional to the sizes.
const SLOW_BYTES_PER_S = 3e6

const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const live = new Set() // QEMU child processes and files to remove, also on process exit
let seq = 0

process.on('exit', () => {
  for (const x of live) {
    if (x.child != null) { try { process.kill(x.child.pid, 'SIGKILL') } catch {} }
    if (x.path != null) rmSync(x.path, { recursive: true, force: true })
  }
})

/** Sum of tx_bytes (and rx_bytes) over a namespace's ethN NICs. */
function nicBytes (ns) {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c',
    'for d in /sys/class/net/eth*; do echo "$(cat $d/statistics/tx_bytes) $(cat $d/statistics/rx_bytes)"; done'], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`cannot read NIC counters of ${ns}: ${r.stderr.trim()}`)
  let tx = 0; let rx = 0
  for (const l of r.stdout.trim().split('\n')) { const [t, x] = l.split(' ').map(Number); tx += t; rx += x }
  return { tx, rx }
}

function cpuSecondsOf (pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(f[11]) + Number(f[12])) / 100
  } catch { return NaN }
}

function sparseFile (path, size) {
  const fd = openSync(path, 'w')
  try { ftruncateSync(fd, size) } finally { closeSync(fd) }
}

function tail (path, n = 8) {
  try { return readFileSync(path, 'latin1').replace(/\r/g, '').trim().split('\n').slice(-n).join(' | ') } catch { return '' }
}

/** Starts QEMU in a namespace; stderr goes to qemu.log in its run dir. */
function startQemu (ns, binary, args, runDir) {
  const logFd = openSync(vmPaths(runDir).qemuLog, 'a')
  const child = spawn('ip', ['netns', 'exec', ns, binary, ...args], { stdio: ['ignore', logFd, logFd] })
  closeSync(logFd)
  const entry = { child }
  live.add(entry)
  const exited = new Promise(resolve => child.once('exit', (code, sig) => resolve({ code, sig })))
  return { child, exited, entry }
}

async function killQemu (vm) {
  if (vm == null) return
  vm.qmp?.close()
  if (vm.child.exitCode == null && vm.child.signalCode == null) {
    try { process.kill(vm.child.pid, 'SIGKILL') } catch {}
    await Promise.race([vm.exited, sleep(5000)])
  }
  live.delete(vm.entry)
}

/** Polls `probe` every `everyMs` until it returns a value other than undefined, or throws on timeout. */
async function until (what, timeoutMs, probe, everyMs = 200) {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`)
    await sleep(everyMs)
  }
}

const evMs = (e) => e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000
const PANIC_RE = /Kernel panic|BUG:|BUG |Oops|general protection fault|segfault|SHOAL-EXIT/

/**
 * Moves a running test-guest VM from `srcNs` to `dstNs` with QEMU's own live migration (RAM) and
 * an NBD drive-mirror (cache disk), like `virsh migrate --live --copy-storage-all`; with
 * `multifd`, with 4 multifd channels (`--parallel --parallel-connections 4`). Never throws for a
 * failed migration: the result then has `error`. Everything it started is killed and removed
 * before it returns.
 *
 * @param {object} o
 * @param {string} o.srcNs network namespace of the source QEMU
 * @param {string} o.dstNs network namespace of the destination QEMU
 * @param {string} o.dstAddr the destination's address (one link): NBD and migration connect there
 * @param {{kernel:string, initrd:string}} o.guest from buildTestGuest()
 * @param {number} o.memorySize VM RAM, bytes
 * @param {number} o.cacheSize cache disk, bytes
 * @param {(path:string) => (void|Promise<void>)} o.cacheInit fills the source's disk file (already `cacheSize` bytes, sparse)
 * @param {{memMiB?:number, rate?:number, records?:number, heartbeatMs?:number}} [o.guestSettings]
 * @param {boolean} [o.multifd] 4 multifd channels
 * @param {string} o.workDir where run dirs and disk files go (short path: unix sockets live there)
 * @param {number} [o.settleMs] how long the source runs after SHOAL-READY before the baseline check (default 2000)
 * @param {number} [o.maxBandwidth] `max-bandwidth`, bytes/s (default libvirt's unlimited)
 * @param {(line:string) => void} [o.log]
 */
export async function runQemuNative ({ srcNs, dstNs, dstAddr, guest, memorySize, cacheSize, cacheInit, guestSettings = {}, multifd = false, workDir, settleMs = 2000, maxBandwidth = LIBVIRT_MAX_BANDWIDTH, log = () => {} }) {
  const tool = multifd ? 'qemu-multifd' : 'qemu'
  const channels = multifd ? 4 : undefined
  const result = {
    tool,
    total_s: null,
    downtime_ms: null,
    wire_bytes: null,
    wire_bytes_back: null,
    guest_ok: false,
    guest_verdict_line: null,
    setup_s: null,
    mirror_s: null,
    ram_s: null,
    expected_downtime_ms: null,
    downtime_measured_ms: null,
    switchover_ms: null,
    params: null,
    migrate_stats: null,
    mirror_bytes: null,
    cpu_s: null,
    baseline: null,
    error: undefined
  }
  const id = `qn${process.pid}x${seq++}`
  const srcDir = join(workDir, `${id}s`)
  const dstDir = join(workDir, `${id}d`)
  const srcRam = `/dev/shm/${id}-src.ram`
  const dstRam = `/dev/shm/${id}-dst.ram`
  const files = [srcDir, dstDir, srcRam, dstRam].map(path => ({ path }))
  for (const f of files) live.add(f)
  let src, dst
  const issues = []
  try {
    mkdirSync(srcDir, { recursive: true })
    mkdirSync(dstDir, { recursive: true })
    const srcDisk = join(srcDir, 'cache.img')
    const dstDisk = join(dstDir, 'cache.img')
    sparseFile(srcRam, memorySize)
    sparseFile(dstRam, memorySize)
    sparseFile(srcDisk, cacheSize)
    sparseFile(dstDisk, cacheSize)
    await cacheInit(srcDisk)
    const geometry = { memorySize, cacheSize, pageSize: 4096 }
    const cfg = validateQemuConfig({ ...testGuestConfig(guest, memorySize, guestSettings), accel: 'tcg' }, geometry)
    const spec = (ram, disk) => ({ name: id, driver: 'qemu', driverConfig: {}, memory: { path: ram, size: memorySize, pageSize: 4096 }, cache: { path: disk, size: cacheSize, blockSize: 262144 } })
    const srcSpec = spec(srcRam, srcDisk)
    const dstSpec = spec(dstRam, dstDisk)
    linkImageFiles(srcSpec, srcDir)
    linkImageFiles(dstSpec, dstDir)

    // --- source: boot, settle, baseline check
    log(`${tool}: booting the source VM in ${srcNs}`)
    src = startQemu(srcNs, cfg.binary, qemuArgs(srcSpec, cfg, srcDir, { accel: 'tcg', incoming: false }), srcDir)
    const srcPaths = vmPaths(srcDir)
    const ready = await waitForLine(srcPaths.serialLog, 0, 'SHOAL-READY', cfg.bootTimeoutMs, { gone: src.exited })
    log(`${tool}: source ${ready.trim()}`)
    src.qmp = await QmpClient.connect(srcPaths.qmp, { timeoutMs: 30_000 })
    await sleep(settleMs)
    const baseline = await checkTestGuest(srcDir)
    result.baseline = { ok: baseline.ok, writes: baseline.writes, records: baseline.records, line: baseline.line }
    if (!baseline.ok) throw new Error(`the source guest fails its own check before the move: ${baseline.line}`)
    log(`${tool}: baseline ${baseline.line}`)

    // --- destination: incoming QEMU, NBD export, migration listener
    const tSetup = performance.now()
    const dstArgs = qemuArgs(dstSpec, cfg, dstDir, { accel: 'tcg', incoming: true }) // ends with -S -incoming defer
    dst = startQemu(dstNs, cfg.binary, dstArgs, dstDir)
    const dstPaths = vmPaths(dstDir)
    dst.qmp = await QmpClient.connect(dstPaths.qmp, { timeoutMs: 30_000 })
    const dstEvents = []
    dst.qmp.onEvent(e => dstEvents.push(e))
    const srcEvents = []
    src.qmp.onEvent(e => srcEvents.push(e))
    const dstCaps = [{ capability: 'late-block-activate', state: true }]
    if (multifd) dstCaps.push({ capability: 'multifd', state: true })
    await dst.qmp.execute('migrate-set-capabilities', { capabilities: dstCaps })
    if (multifd) await dst.qmp.execute('migrate-set-parameters', { 'multifd-channels': channels })
    const blocks = await dst.qmp.execute('query-block')
    const dstNode = blocks.find(b => b.device === DISK_ID)?.inserted?.['node-name']
    if (dstNode == null) throw new Error(`destination has no block device ${DISK_ID}`)
    await dst.qmp.execute('nbd-server-start', { addr: { type: 'inet', data: { host: dstAddr, port: String(NBD_PORT) } } })
    await dst.qmp.execute('block-export-add', { type: 'nbd', id: `nbd-${DISK_ID}`, 'node-name': dstNode, name: DISK_ID, writable: true })
    await dst.qmp.execute('migrate-incoming', { uri: `tcp:${dstAddr}:${MIGRATION_PORT}` })

    // --- source migration settings
    const srcCaps = [{ capability: 'pause-before-switchover', state: true }]
    if (multifd) srcCaps.push({ capability: 'multifd', state: true })
    await src.qmp.execute('migrate-set-capabilities', { capabilities: srcCaps })
    await src.qmp.execute('migrate-set-parameters', {
      'max-bandwidth': maxBandwidth,
      'downtime-limit': QEMU_DEFAULT_DOWNTIME_LIMIT_MS,
      ...(multifd ? { 'multifd-channels': channels } : {})
    })
    const p = await src.qmp.execute('query-migrate-parameters')
    const caps = await src.qmp.execute('query-migrate-capabilities')
    result.params = {
      'max-bandwidth': p['max-bandwidth'],
      'downtime-limit': p['downtime-limit'],
      'multifd-channels': multifd ? p['multifd-channels'] : undefined,
      capabilities_src: caps.filter(c => c.state).map(c => c.capability),
      capabilities_dst: dstCaps.map(c => c.capability),
      mirror: 'blockdev-mirror sync=full copy-mode=background (unthrottled), block-job-cancel at pre-switchover'
    }
    result.setup_s = (performance.now() - tSetup) / 1000

    // --- mirror the disk into the destination's export
    const before = { src: nicBytes(srcNs), dst: nicBytes(dstNs) }
    const cpu0 = { src: cpuSecondsOf(src.child.pid), dst: cpuSecondsOf(dst.child.pid) }
    const t0 = performance.now()
    log(`${tool}: mirroring ${cacheSize} bytes of disk to ${dstAddr}:${NBD_PORT}`)
    await src.qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': NBD_NODE, server: { type: 'inet', host: dstAddr, port: String(NBD_PORT) }, export: DISK_ID })
    await src.qmp.execute('blockdev-mirror', { 'job-id': JOB_ID, device: DISK_ID, target: NBD_NODE, sync: 'full', 'auto-dismiss': false })
    const mirrorTimeout = 120_000 + cacheSize / SLOW_BYTES_PER_S * 1000
    let lastLog = 0
    await until('the disk mirror to be ready', mirrorTimeout, async () => {
      if (srcEvents.some(e => e.event === 'BLOCK_JOB_ERROR')) throw new Error(`mirror I/O error: ${JSON.stringify(srcEvents.find(e => e.event === 'BLOCK_JOB_ERROR').data)}`)
      const jobs = await src.qmp.execute('query-block-jobs')
      const j = jobs.find(x => x.device === JOB_ID)
      if (j == null || j.status === 'concluded' || j.status === 'aborting') throw new Error(`mirror job ended before it was ready: ${JSON.stringify(j ?? srcEvents.filter(e => e.event.startsWith('BLOCK_JOB')))}`)
      if (Date.now() - lastLog > 10_000) { lastLog = Date.now(); log(`${tool}: mirror ${j.offset}/${j.len}`) }
      return j.ready ? j : undefined
    }, 250)
    const tReady = performance.now()
    result.mirror_s = (tReady - t0) / 1000
    log(`${tool}: mirror ready after ${result.mirror_s.toFixed(1)} s; migrating RAM`)

    // --- RAM migration, pausing before switchover
    await src.qmp.execute('migrate', { uri: `tcp:${dstAddr}:${MIGRATION_PORT}` })
    const ramTimeout = 120_000 + memorySize / SLOW_BYTES_PER_S * 1000 * 3
    let expected = null
    lastLog = 0
    const paused = await until('the migration to reach pre-switchover', ramTimeout, async () => {
      const m = await src.qmp.execute('query-migrate')
      if (m.status === 'failed' || m.status === 'cancelled') throw new Error(`migration ${m.status}: ${m['error-desc'] ?? ''}`)
      if (m['expected-downtime'] != null) expected = m['expected-downtime']
      if (Date.now() - lastLog > 10_000 && m.ram != null) { lastLog = Date.now(); log(`${tool}: ram ${m.ram.transferred} B sent, remaining ${m.ram.remaining}, dirty-sync ${m.ram['dirty-sync-count']}, expected downtime ${expected} ms`) }
      return m.status === 'pre-switchover' || m.status === 'device' || m.status === 'completed' ? m : undefined
    }, 100)
    result.expected_downtime_ms = expected
    if (paused.status !== 'pre-switchover') throw new Error(`migration went to ${paused.status} without pausing before switchover`)
    const tPre = performance.now()

    // libvirt: qemuMigrationSrcNBDCopyCancel(abortMigration=false): block-job-cancel of the ready
    // mirror (not forced) completes it with the target in sync; then detach the nbd node.
    await src.qmp.execute('block-job-cancel', { device: JOB_ID })
    await until('the mirror job to conclude', 60_000 + cacheSize / SLOW_BYTES_PER_S * 100, async () => {
      const j = (await src.qmp.execute('query-block-jobs')).find(x => x.device === JOB_ID)
      if (j == null) return true
      if (j.status === 'concluded') {
        if (j.error != null) throw new Error(`mirror job failed at completion: ${j.error}`)
        return true
      }
      return undefined
    }, 20)
    const done = srcEvents.find(e => e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED')
    if (done?.event === 'BLOCK_JOB_CANCELLED') issues.push('mirror job ended CANCELLED, not COMPLETED (target not declared in sync)')
    result.mirror_bytes = done?.data?.offset ?? null
    try { await src.qmp.execute('job-dismiss', { id: JOB_ID }) } catch {}
    await src.qmp.execute('blockdev-del', { 'node-name': NBD_NODE })
    await src.qmp.execute('migrate-continue', { state: 'pre-switchover' })
    const completed = await until('the migration to complete', 120_000, async () => {
      const m = await src.qmp.execute('query-migrate')
      if (m.status === 'failed' || m.status === 'cancelled') throw new Error(`migration ${m.status} after switchover: ${m['error-desc'] ?? ''}`)
      return m.status === 'completed' ? m : undefined
    }, 20)
    const tCompleted = performance.now()
    result.switchover_ms = Math.round(tCompleted - tPre)
    result.ram_s = (tCompleted - tReady) / 1000
    result.downtime_ms = completed.downtime ?? null
    result.migrate_stats = {
      'total-time_ms': completed['total-time'],
      'setup-time_ms': completed['setup-time'],
      ram_transferred: completed.ram?.transferred,
      ram_normal_pages: completed.ram?.normal,
      ram_duplicate_pages: completed.ram?.duplicate,
      ram_dirty_sync_count: completed.ram?.['dirty-sync-count'],
      ram_mbps: completed.ram?.mbps,
      ram_multifd_bytes: completed.ram?.['multifd-bytes']
    }

    // --- destination: Finish (stop the NBD server, resume)
    await until('the destination to be paused after the incoming migration', 60_000, async () => {
      const s = await dst.qmp.execute('query-status')
      if (s.status === 'inmigrate') return undefined
      if (s.status !== 'paused' && s.status !== 'running' && s.status !== 'postmigrate') throw new Error(`destination status ${s.status} after the migration`)
      return s
    }, 20)
    await dst.qmp.execute('nbd-server-stop')
    const hbFrom = logSize(dstPaths.serialLog)
    await dst.qmp.execute('cont')
    await until('the destination to run', 30_000, async () => {
      const s = await dst.qmp.execute('query-status')
      return s.status === 'running' ? s : undefined
    }, 10)
    const tRunning = performance.now()
    result.total_s = (tRunning - t0) / 1000
    const after = { src: nicBytes(srcNs), dst: nicBytes(dstNs) }
    result.wire_bytes = after.src.tx - before.src.tx
    result.wire_bytes_back = after.dst.tx - before.dst.tx
    result.cpu_s = { src: cpuSecondsOf(src.child.pid) - cpu0.src, dst: cpuSecondsOf(dst.child.pid) - cpu0.dst }
    const stop = srcEvents.find(e => e.event === 'STOP')
    const resume = dstEvents.find(e => e.event === 'RESUME')
    if (stop != null && resume != null) result.downtime_measured_ms = Math.round(evMs(resume) - evMs(stop))
    log(`${tool}: destination running ${result.total_s.toFixed(1)} s after the mirror started; QEMU downtime ${result.downtime_ms} ms`)
    await killQemu(src); src = undefined // the source is gone after a migration, as with libvirt

    // --- the guest on the destination
    try {
      await waitForLine(dstPaths.serialLog, hbFrom, cfg.heartbeat, 30_000, { gone: dst.exited })
      const v = await checkTestGuest(dstDir, 120_000)
      result.guest_verdict_line = v.line
      result.guest_ok = v.ok && v.writes > baseline.writes && v.records > baseline.records
      if (!result.guest_ok) issues.push(v.ok ? `guest counters did not continue (writes ${baseline.writes}->${v.writes}, records ${baseline.records}->${v.records})` : 'guest check failed on the destination')
    } catch (err) {
      issues.push(`guest on the destination: ${err.message}`)
    }
  } catch (err) {
    issues.push(err.message)
    for (const [name, vm, dir] of [['source', src, srcDir], ['destination', dst, dstDir]]) {
      if (vm == null) continue
      const t = tail(vmPaths(dir).qemuLog, 4)
      if (t !== '') issues.push(`${name} QEMU log: ${t}`)
      if (vm.child.exitCode != null || vm.child.signalCode != null) issues.push(`${name} QEMU exited (${vm.child.exitCode ?? vm.child.signalCode})`)
    }
    if (src?.qmp != null) { try { await src.qmp.execute('migrate_cancel') } catch {} }
  } finally {
    // a panicking or crashed guest on the destination, recorded, not hidden
    const dstLog = join(dstDir, 'serial.log')
    if (existsSync(dstLog)) {
      const bad = readFileSync(dstLog, 'latin1').replace(/\r/g, '').split('\n').filter(l => PANIC_RE.test(l))
      if (bad.length > 0) {
        issues.push(`destination guest console: ${bad.slice(0, 3).join(' | ')}`)
        result.guest_panic = true
        result.guest_ok = false
      }
    }
    await killQemu(src)
    await killQemu(dst)
    for (const f of files) { rmSync(f.path, { recursive: true, force: true }); live.delete(f) }
  }
  if (issues.length > 0) result.error = issues.join('; ')
  return result
}
