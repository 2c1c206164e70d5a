// The baseline of the QEMU benchmarks: QEMU's own live migration of RAM plus its local cache disk,
// the way libvirt does `virsh migrate --live --copy-storage-all` (the multifd variant:
// `--parallel --parallel-connections 4`), driven over QMP between two QEMUs in two network
// namespaces, over one link (one destination address).
//
// What libvirt does, and this file mirrors (libvirt src/qemu/qemu_migration.c, qemu_migration_params.c):
//  - both QEMUs: the `events` migration capability (libvirt turns it on when it connects to QEMU),
//    so progress is followed through MIGRATION / JOB_STATUS_CHANGE events, not polling.
//  - destination (Prepare): QEMU started paused with `-incoming defer`; capability
//    `late-block-activate` (libvirt's "always on" destination capability); `multifd` and
//    `multifd-channels` when parallel; `nbd-server-start` on the migration address;
//    `block-export-add` type nbd, writable, export name = the disk's alias
//    (qemuMigrationDstStartNBDServer); `migrate-incoming tcp:`.
//  - source (Perform, qemuMigrationSrcRun): capability `pause-before-switchover` (libvirt's
//    "always on" source capability); `max-bandwidth` = libvirt's default, "unlimited"
//    (QEMU_DOMAIN_MIG_BANDWIDTH_MAX MiB/s, i.e. INT64_MAX rounded down to a MiB); `downtime-limit`
//    left at QEMU's default of 300 ms (libvirt sets it only on `virsh migrate-setmaxdowntime`;
//    it is set explicitly to 300 here, the same value); `blockdev-add` of an nbd node for the
//    destination's export, `blockdev-mirror` sync=full into it (qemuMigrationSrcNBDStorageCopy;
//    libvirt's mirror speed is the same "unlimited" bandwidth, here the mirror is left unthrottled,
//    the same thing), wait until the mirror is ready; `migrate tcp:`; when the migration pauses in
//    `pre-switchover` (CPUs stopped, RAM sent, disks still active on the source),
//    `block-job-cancel` (not forced) of the ready mirror, which completes it with source and target
//    in sync (qemuMigrationSrcNBDCopyCancel with abortMigration=false), `blockdev-del` of the nbd
//    node, `migrate-continue pre-switchover`, wait for `completed`.
//  - destination (Finish): `nbd-server-stop`, `cont`.
//
// QEMU 7.2 under TCG loses dirty pages in a live migration (upstream bug, fixed in QEMU 9.0 by
// commit 03bfc2188f "physmem: Fix migration dirty bitmap coherency with TCG memory access"; not in
// Debian 12's 7.2.x): the fast path of the dirty-bitmap sync, taken for every RAM block whose size
// is a multiple of 64 pages, clears dirty bits without resetting the TCG TLBs, so later guest
// stores through those TLB entries are not tracked. The destination's RAM then differs from the
// source's in tens of pages and its kernel usually panics. `tcgDirtyWorkaround: true` gives both
// VMs 8 KiB more RAM than `memorySize`, which makes QEMU take the slow sync path (which does reset
// the TLBs): the migration is then correct. Default off: the faithful baseline.
import { spawn, spawnSync } from 'node:child_process'
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import {
  QmpClient, checkTestGuest, linkImageFiles, logSize, qemuArgs, testGuestConfig, validateQemuConfig,
  vmPaths, waitForLine
} from '@shoal/driver-qemu'

/** libvirt's default `max-bandwidth` (bytes/s): QEMU_DOMAIN_MIG_BANDWIDTH_MAX = INT64_MAX / 2^20 MiB/s, unlimited (exact as a double). */
export const LIBVIRT_MAX_BANDWIDTH = 2 ** 63 - 2 ** 20
/** QEMU's default `downtime-limit` (ms); libvirt does not change it unless asked. */
export const QEMU_DEFAULT_DOWNTIME_LIMIT_MS = 300
/** RAM added to both VMs by `tcgDirtyWorkaround` (not a multiple of 64 pages). */
export const TCG_WORKAROUND_EXTRA_RAM = 8192

const NBD_PORT = 10809
const MIGRATION_PORT = 49152 // libvirt's first migration port
const DISK_ID = 'cache0' // the -drive id of qemuArgs' cache disk (libvirt's disk alias)
const JOB_ID = 'migration-cache0'
const NBD_NODE = 'migration-cache0-storage'
// A rate far below what a 200 Mbit/s link moves: timeouts proportional to the sizes, so a slow but
// progressing run never times out and a stalled one does.
const SLOW_BYTES_PER_S = 3e6

const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const live = new Set() // QEMU processes and files to remove, also when the process exits early
let seq = 0

process.on('exit', () => {
  for (const x of live) {
    if (x.child != null) { try { process.kill(x.child.pid, 'SIGKILL') } catch {} }
    if (x.path != null) rmSync(x.path, { recursive: true, force: true })
  }
})

/** Sums of tx_bytes and rx_bytes over a namespace's ethN NICs. */
function nicBytes (ns) {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c',
    'for d in /sys/class/net/eth*; do echo "$(cat $d/statistics/tx_bytes) $(cat $d/statistics/rx_bytes)"; done'], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`cannot read the NIC counters of ${ns}: ${r.stderr.trim()}`)
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

/** Starts QEMU in a namespace (`ip netns exec` execs it: the child's pid is QEMU's); output goes to qemu.log. */
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

/** Polls `probe` every `everyMs` until it returns something other than undefined; throws on timeout. */
async function until (what, timeoutMs, probe, everyMs = 200) {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`)
    await sleep(everyMs)
  }
}

/** The QMP events of one QEMU, kept, with a wait for the first one matching a predicate. */
class Events {
  constructor (qmp, exited) {
    this.list = []
    this.waiters = new Set()
    this.exited = exited
    qmp.onEvent(e => { e.at = performance.now(); this.list.push(e); for (const w of [...this.waiters]) w(e) })
  }

  find (pred) { return this.list.find(pred) }

  /**
   * Resolves with the first event (already received or to come) matching `pred`. Meanwhile
   * `poll` runs every `everyMs` (progress, failure checks; it may throw to give up).
   */
  async wait (what, timeoutMs, pred, poll, everyMs = 1000) {
    const hit = this.list.find(pred)
    if (hit != null) return hit
    return await new Promise((resolve, reject) => {
      const end = Date.now() + timeoutMs
      let settled = false
      let timer
      const finish = (fn, v) => { if (settled) return; settled = true; this.waiters.delete(w); clearTimeout(timer); fn(v) }
      const w = (e) => { if (pred(e)) finish(resolve, e) }
      this.waiters.add(w)
      const tick = async () => {
        if (settled) return
        if (Date.now() > end) { finish(reject, new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`)); return }
        try { await poll?.() } catch (err) { finish(reject, err); return }
        if (!settled) timer = setTimeout(tick, everyMs)
      }
      timer = setTimeout(tick, everyMs)
      void this.exited.then(({ code, sig }) => finish(reject, new Error(`QEMU exited (${code ?? sig}) while waiting for ${what}`)))
    })
  }
}

const isMigration = (...states) => (e) => e.event === 'MIGRATION' && states.includes(e.data?.status)
const evMs = (e) => e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000
const PANIC_RE = /Kernel panic|BUG:|Oops|general protection fault|stack-protector|SHOAL-EXIT/

/**
 * Moves a running test-guest VM from `srcNs` to `dstNs` with QEMU's own live migration (RAM) and
 * an NBD drive-mirror (cache disk), like `virsh migrate --live --copy-storage-all`; with
 * `multifd`, with 4 multifd channels. Never throws for a failed migration: the result then has
 * `error`. Everything it started is killed and removed before it returns.
 *
 * @param {object} o
 * @param {string} o.srcNs network namespace of the source QEMU
 * @param {string} o.dstNs network namespace of the destination QEMU
 * @param {string} o.dstAddr the destination's address (one link): NBD and migration connect there
 * @param {{kernel:string, initrd:string}} o.guest from buildTestGuest()
 * @param {number} o.memorySize VM RAM, bytes (a multiple of 2 MiB)
 * @param {number} o.cacheSize cache disk, bytes
 * @param {(path:string) => (void|Promise<void>)} o.cacheInit fills the source's disk file (created sparse, `cacheSize` bytes)
 * @param {{memMiB?:number, rate?:number, records?:number, heartbeatMs?:number}} [o.guestSettings]
 * @param {boolean} [o.multifd] 4 multifd channels (both sides)
 * @param {string} o.workDir where run dirs and disk files go (short: unix sockets live there); RAM files go to /dev/shm
 * @param {number} [o.settleMs] how long the source runs after SHOAL-READY before the baseline check (default 2000)
 * @param {number} [o.maxBandwidth] `max-bandwidth`, bytes/s (default libvirt's unlimited)
 * @param {boolean} [o.tcgDirtyWorkaround] 8 KiB more RAM in both VMs, against QEMU 7.2's TCG dirty-tracking bug (see the file's header)
 * @param {(line:string) => void} [o.log]
 * @returns {Promise<object>} `tool` ('qemu' | 'qemu-multifd'); `total_s` mirror start -> destination
 *   running (its RESUME event); `downtime_ms` QEMU's own figure (source `query-migrate` after
 *   completion: CPUs stopped -> migration completed, which includes the mirror's completion at
 *   pre-switchover); `downtime_measured_ms` source STOP -> destination RESUME (QMP event
 *   timestamps, one host clock), i.e. with the destination's load and libvirt's Finish
 *   (`nbd-server-stop`, `cont`); `expected_downtime_ms` QEMU's last estimate before the switchover;
 *   `wire_bytes` / `wire_bytes_back` tx bytes of the source's / destination's NICs from the mirror's
 *   start to the destination running (all traffic: NBD, migration, TCP/IP overhead); `guest_ok`
 *   the destination guest's own check passed and its writes/records continued past the baseline's
 *   (a counter whose rate is 0 is not required to grow); `guest_verdict_line`; `guest_panic`;
 *   `setup_s` destination start -> NBD export and incoming listener ready (not in total_s);
 *   `mirror_s` mirror start -> ready; `ram_s` migrate -> completed (with the switchover);
 *   `switchover_ms` pre-switchover -> completed (mirror completion + device state); `finish_ms`
 *   source completed -> destination running; `ram_bytes`; `tcg_dirty_workaround`; `params`
 *   (max-bandwidth, downtime-limit, channels, capabilities of both sides); `migrate_stats`;
 *   `mirror_bytes` (the mirror job's final offset); `cpu_s` CPU seconds of both QEMUs over
 *   total_s; `baseline` (the source guest's check before the move); `error` when anything failed.
 */
export async function runQemuNative ({ srcNs, dstNs, dstAddr, guest, memorySize, cacheSize, cacheInit, guestSettings = {}, multifd = false, workDir, settleMs = 2000, maxBandwidth = LIBVIRT_MAX_BANDWIDTH, tcgDirtyWorkaround = false, log = () => {} }) {
  const tool = multifd ? 'qemu-multifd' : 'qemu'
  const channels = 4
  const ramBytes = memorySize + (tcgDirtyWorkaround ? TCG_WORKAROUND_EXTRA_RAM : 0)
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
    finish_ms: null,
    ram_bytes: ramBytes,
    tcg_dirty_workaround: tcgDirtyWorkaround,
    params: null,
    migrate_stats: null,
    mirror_bytes: null,
    cpu_s: null,
    baseline: null,
    guest_panic: false,
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
    sparseFile(srcRam, ramBytes)
    sparseFile(dstRam, ramBytes)
    sparseFile(srcDisk, cacheSize)
    sparseFile(dstDisk, cacheSize) // the destination's disk: zero, filled by the mirror
    await cacheInit(srcDisk)
    const geometry = { memorySize, cacheSize, pageSize: 4096 }
    const cfg = validateQemuConfig({ ...testGuestConfig(guest, memorySize, guestSettings), accel: 'tcg' }, geometry)
    const spec = (ram, disk) => ({ name: id, driver: 'qemu', driverConfig: {}, memory: { path: ram, size: memorySize, pageSize: 4096 }, cache: { path: disk, size: cacheSize, blockSize: 262144 } })
    const srcSpec = spec(srcRam, srcDisk)
    const dstSpec = spec(dstRam, dstDisk)
    linkImageFiles(srcSpec, srcDir)
    linkImageFiles(dstSpec, dstDir)
    const argsOf = (s, dir, incoming) => {
      const args = qemuArgs(s, cfg, dir, { accel: 'tcg', incoming }) // incoming: ends with -S -incoming defer
      if (!tcgDirtyWorkaround) return args
      const memMiB = memorySize / (1024 * 1024)
      const k = `${ramBytes / 1024}k`
      const m = args.indexOf('-m')
      const o = args.findIndex(a => a.startsWith('memory-backend-file,'))
      if (m < 0 || o < 0 || args[m + 1] !== `${memMiB}M` || !args[o].includes(`size=${memMiB}M,`)) throw new Error('tcgDirtyWorkaround: unexpected QEMU command line')
      args[m + 1] = k
      args[o] = args[o].replace(`size=${memMiB}M,`, `size=${k},`)
      return args
    }

    // --- source: boot, settle, baseline check
    log(`${tool}: booting the source VM in ${srcNs}`)
    src = startQemu(srcNs, cfg.binary, argsOf(srcSpec, srcDir, false), srcDir)
    const srcPaths = vmPaths(srcDir)
    const ready = await waitForLine(srcPaths.serialLog, 0, 'SHOAL-READY', cfg.bootTimeoutMs, { gone: src.exited })
    log(`${tool}: source ${ready.trim()}`)
    src.qmp = await QmpClient.connect(srcPaths.qmp, { timeoutMs: 30_000 })
    const srcEv = new Events(src.qmp, src.exited)
    await sleep(settleMs)
    const baseline = await checkTestGuest(srcDir)
    result.baseline = { ok: baseline.ok, writes: baseline.writes, records: baseline.records, line: baseline.line }
    if (!baseline.ok) throw new Error(`the source guest fails its own check before the move: ${baseline.line}`)
    log(`${tool}: baseline ${baseline.line}`)

    // --- destination (libvirt's Prepare): incoming QEMU, NBD export, migration listener
    const tSetup = performance.now()
    dst = startQemu(dstNs, cfg.binary, argsOf(dstSpec, dstDir, true), dstDir)
    const dstPaths = vmPaths(dstDir)
    dst.qmp = await QmpClient.connect(dstPaths.qmp, { timeoutMs: 30_000 })
    const dstEv = new Events(dst.qmp, dst.exited)
    const dstCaps = ['events', 'late-block-activate', ...(multifd ? ['multifd'] : [])]
    await dst.qmp.execute('migrate-set-capabilities', { capabilities: dstCaps.map(capability => ({ capability, state: true })) })
    if (multifd) await dst.qmp.execute('migrate-set-parameters', { 'multifd-channels': channels })
    const blocks = await dst.qmp.execute('query-block')
    const dstNode = blocks.find(b => b.device === DISK_ID)?.inserted?.['node-name']
    if (dstNode == null) throw new Error(`the destination has no block device ${DISK_ID}`)
    await dst.qmp.execute('nbd-server-start', { addr: { type: 'inet', data: { host: dstAddr, port: String(NBD_PORT) } } })
    await dst.qmp.execute('block-export-add', { type: 'nbd', id: `nbd-${DISK_ID}`, 'node-name': dstNode, name: DISK_ID, writable: true })
    await dst.qmp.execute('migrate-incoming', { uri: `tcp:${dstAddr}:${MIGRATION_PORT}` })

    // --- source migration settings
    const srcCaps = ['events', 'pause-before-switchover', ...(multifd ? ['multifd'] : [])]
    await src.qmp.execute('migrate-set-capabilities', { capabilities: srcCaps.map(capability => ({ capability, state: true })) })
    await src.qmp.execute('migrate-set-parameters', {
      'max-bandwidth': maxBandwidth,
      'downtime-limit': QEMU_DEFAULT_DOWNTIME_LIMIT_MS,
      ...(multifd ? { 'multifd-channels': channels } : {})
    })
    const p = await src.qmp.execute('query-migrate-parameters')
    result.params = {
      'max-bandwidth': p['max-bandwidth'],
      'downtime-limit': p['downtime-limit'],
      ...(multifd ? { 'multifd-channels': p['multifd-channels'] } : {}),
      capabilities_src: (await src.qmp.execute('query-migrate-capabilities')).filter(c => c.state).map(c => c.capability),
      capabilities_dst: (await dst.qmp.execute('query-migrate-capabilities')).filter(c => c.state).map(c => c.capability),
      mirror: 'blockdev-mirror sync=full, unthrottled; block-job-cancel (not forced) at pre-switchover'
    }
    result.setup_s = (performance.now() - tSetup) / 1000

    // --- mirror the disk into the destination's export, until ready
    const before = { src: nicBytes(srcNs), dst: nicBytes(dstNs) }
    const cpu0 = { src: cpuSecondsOf(src.child.pid), dst: cpuSecondsOf(dst.child.pid) }
    const t0 = performance.now()
    log(`${tool}: mirroring ${cacheSize} bytes of disk to ${dstAddr}:${NBD_PORT}`)
    await src.qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': NBD_NODE, server: { type: 'inet', host: dstAddr, port: String(NBD_PORT) }, export: DISK_ID })
    await src.qmp.execute('blockdev-mirror', { 'job-id': JOB_ID, device: DISK_ID, target: NBD_NODE, sync: 'full', 'auto-dismiss': false })
    let lastLog = Date.now()
    await srcEv.wait('the disk mirror to be ready', 120_000 + cacheSize / SLOW_BYTES_PER_S * 1000,
      e => e.event === 'BLOCK_JOB_READY' && e.data?.device === JOB_ID,
      async () => {
        const j = (await src.qmp.execute('query-block-jobs')).find(x => x.device === JOB_ID)
        if (j == null || j.status === 'concluded' || j.status === 'aborting') throw new Error(`the mirror job ended before it was ready: ${j?.error ?? JSON.stringify(srcEv.list.filter(e => e.event.startsWith('BLOCK_JOB')).map(e => e.data))}`)
        if (Date.now() - lastLog > 10_000) { lastLog = Date.now(); log(`${tool}: mirror ${j.offset}/${j.len}`) }
      }, 2000)
    const tReady = performance.now()
    result.mirror_s = (tReady - t0) / 1000
    log(`${tool}: mirror ready after ${result.mirror_s.toFixed(1)} s; migrating RAM`)

    // --- RAM migration, up to the pause before switchover
    await src.qmp.execute('migrate', { uri: `tcp:${dstAddr}:${MIGRATION_PORT}` })
    let expected = null
    lastLog = Date.now()
    const pausedEv = await srcEv.wait('the migration to reach pre-switchover', 120_000 + ramBytes / SLOW_BYTES_PER_S * 3000,
      isMigration('pre-switchover', 'failed', 'cancelled', 'completed'),
      async () => {
        const m = await src.qmp.execute('query-migrate')
        if (m['expected-downtime'] != null) expected = m['expected-downtime']
        if (Date.now() - lastLog > 10_000 && m.ram != null) { lastLog = Date.now(); log(`${tool}: ram ${m.ram.transferred} B sent, ${m.ram.remaining} B remaining, dirty-sync ${m.ram['dirty-sync-count']}, expected downtime ${expected} ms`) }
      }, 1000)
    result.expected_downtime_ms = expected
    if (pausedEv.data.status !== 'pre-switchover') {
      const m = await src.qmp.execute('query-migrate')
      throw new Error(`migration ${m.status} before switchover: ${m['error-desc'] ?? ''}`)
    }
    const tPre = pausedEv.at

    // libvirt's qemuMigrationSrcNBDCopyCancel(abortMigration=false): cancel the ready mirror
    // without force, which completes it with the target in sync; detach the nbd node
    await src.qmp.execute('block-job-cancel', { device: JOB_ID })
    await srcEv.wait('the mirror job to conclude', 60_000 + cacheSize / SLOW_BYTES_PER_S * 100,
      e => e.event === 'JOB_STATUS_CHANGE' && e.data?.id === JOB_ID && (e.data.status === 'concluded' || e.data.status === 'null'))
    const done = srcEv.find(e => (e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED') && e.data?.device === JOB_ID)
    if (done?.data?.error != null) throw new Error(`the mirror failed at its completion: ${done.data.error}`)
    if (done?.event !== 'BLOCK_JOB_COMPLETED') issues.push(`the mirror ended with ${done?.event ?? 'no event'}, not BLOCK_JOB_COMPLETED (target not declared in sync)`)
    result.mirror_bytes = done?.data?.offset ?? null
    await src.qmp.execute('job-dismiss', { id: JOB_ID })
    await src.qmp.execute('blockdev-del', { 'node-name': NBD_NODE })
    await src.qmp.execute('migrate-continue', { state: 'pre-switchover' })
    const endEv = await srcEv.wait('the migration to complete', 120_000, isMigration('completed', 'failed', 'cancelled'))
    const completed = await src.qmp.execute('query-migrate')
    if (endEv.data.status !== 'completed') throw new Error(`migration ${completed.status} after switchover: ${completed['error-desc'] ?? ''}`)
    const tCompleted = endEv.at
    result.switchover_ms = Math.round(tCompleted - tPre)
    result.ram_s = (tCompleted - tReady) / 1000
    result.downtime_ms = completed.downtime ?? null
    result.migrate_stats = {
      total_time_ms: completed['total-time'],
      setup_time_ms: completed['setup-time'],
      ram_transferred: completed.ram?.transferred,
      ram_normal_pages: completed.ram?.normal,
      ram_duplicate_pages: completed.ram?.duplicate,
      ram_dirty_sync_count: completed.ram?.['dirty-sync-count'],
      ram_mbps: completed.ram?.mbps,
      ram_multifd_bytes: completed.ram?.['multifd-bytes']
    }

    // --- destination (libvirt's Finish): stop the NBD server, resume
    await dstEv.wait('the incoming migration to complete', 60_000, isMigration('completed', 'failed'))
    const st = await until('the destination to leave inmigrate', 30_000, async () => {
      const s = await dst.qmp.execute('query-status')
      return s.status === 'inmigrate' ? undefined : s.status
    }, 10)
    if (st !== 'paused') throw new Error(`destination status ${st} after the incoming migration`)
    await dst.qmp.execute('nbd-server-stop')
    const hbFrom = logSize(dstPaths.serialLog)
    await dst.qmp.execute('cont')
    const resumed = await dstEv.wait('the destination to resume', 30_000, e => e.event === 'RESUME')
    if ((await dst.qmp.execute('query-status')).status !== 'running') throw new Error('the destination does not run after cont')
    result.total_s = (resumed.at - t0) / 1000
    result.finish_ms = Math.round(resumed.at - tCompleted)
    const after = { src: nicBytes(srcNs), dst: nicBytes(dstNs) }
    result.wire_bytes = after.src.tx - before.src.tx
    result.wire_bytes_back = after.dst.tx - before.dst.tx
    result.cpu_s = { src: cpuSecondsOf(src.child.pid) - cpu0.src, dst: cpuSecondsOf(dst.child.pid) - cpu0.dst }
    const stop = srcEv.find(e => e.event === 'STOP')
    if (stop != null) result.downtime_measured_ms = Math.round(evMs(resumed) - evMs(stop))
    log(`${tool}: destination running ${result.total_s.toFixed(1)} s after the mirror started; QEMU's downtime ${result.downtime_ms} ms, STOP->RESUME ${result.downtime_measured_ms} ms`)
    await killQemu(src); src = undefined // libvirt's Confirm kills the source

    // --- the guest on the destination
    try {
      await waitForLine(dstPaths.serialLog, hbFrom, cfg.heartbeat, 30_000, { gone: dst.exited })
      const v = await checkTestGuest(dstDir, 120_000)
      result.guest_verdict_line = v.line
      const writesOn = (guestSettings.rate ?? 1000) > 0
      const recordsOn = (guestSettings.records ?? 20) > 0
      const continued = (!writesOn || v.writes > baseline.writes) && (!recordsOn || v.records > baseline.records)
      result.guest_ok = v.ok && continued
      if (!v.ok) issues.push('the guest fails its check on the destination')
      else if (!continued) issues.push(`the guest's counters did not continue (writes ${baseline.writes}->${v.writes}, records ${baseline.records}->${v.records})`)
    } catch (err) {
      issues.push(`guest on the destination: ${err.message}`)
    }
  } catch (err) {
    issues.push(err.message)
    for (const [name, vm, dir] of [['source', src, srcDir], ['destination', dst, dstDir]]) {
      if (vm == null) continue
      const t = tail(vmPaths(dir).qemuLog, 4)
      if (t !== '') issues.push(`${name} QEMU log: ${t}`)
      if (vm.child.exitCode != null || vm.child.signalCode != null) {
        issues.push(`${name} QEMU exited (${vm.child.exitCode ?? vm.child.signalCode})`)
        const lines = tail(vmPaths(dir).serialLog, 3)
        if (lines !== '') issues.push(`${name} guest console: ${lines}`)
      }
    }
  } finally {
    // a panicking or crashed guest on the destination: recorded, not hidden
    const dstLog = vmPaths(dstDir).serialLog
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
