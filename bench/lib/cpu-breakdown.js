// Where a peer's CPU goes, from V8 CPU profiles (`node --cpu-prof`, one file per thread) and
// /proc thread counters taken over the same window. Used by `pnpm bench transfer`.
//
// Method, per side:
//  1. Each profiled thread (the main thread and every worker_thread) is cut to the measured window
//     (profile timestamps and process.hrtime share CLOCK_MONOTONIC) and each sample's time is given
//     to one category by the rule tables below.
//  2. The profile counts wall time while a thread is not idle, and the event loop is marked idle
//     while libuv does socket reads outside JS; so each thread's categories are scaled to that
//     thread's own CPU time from /proc/<pid>/task/<tid>/stat (utime + stime). CPU the profile
//     did not see becomes "event loop outside JS" (socket reads, epoll); profile time beyond the
//     thread's CPU (the thread was runnable but preempted) is scaled away.
//  3. Threads the profiler cannot see are charged whole: the libuv threadpool to file I/O, V8's
//     platform threads (concurrent marking, sweeping, background compile) to allocation and GC,
//     the profiler's own threads to "profiler overhead".
//  4. Page faults come from /proc/<pid>/stat (minflt, majflt) over the window; their kernel time
//     is estimated as faults × the cost of one first-touch fault measured on this machine
//     (calibratePageFault). That time is *inside* the rows above (in whatever code touched the
//     page), so the page-fault row is shown for its size and not added to the total.
//
// Loaded with `--import` (see peer.js) it also runs in every worker_thread, where it reports the
// thread's OS tid to the main thread so /proc counters and profiles can be matched up.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { isMainThread, threadId } from 'node:worker_threads'

export const TID_CHANNEL = 'shoal-bench-thread-ids'

/** This thread's OS thread id (Linux). */
export function ownTid () {
  // /proc/thread-self -> "<pid>/task/<tid>"
  return Number(readlinkSync('/proc/thread-self').split('/').pop())
}

if (!isMainThread) {
  const ch = new BroadcastChannel(TID_CHANNEL)
  ch.postMessage({ threadId, tid: ownTid() })
  ch.close()
}

/** Categories in table order; `key` is what the JSON uses. */
export const CATEGORIES = [
  ['cipher', 'cipher on the main thread (Noise ChaCha20-Poly1305, node:crypto)'],
  ['data_lanes', 'data lanes on data workers (TLS in OpenSSL, sockets, framing)'],
  ['mux_copies', 'muxing and copies (yamux, it-*, uint8arraylist, Buffer copies)'],
  ['codec', 'codec (wire frames)'],
  ['socket_io', 'socket writes (node:net, libuv, in JS)'],
  ['event_loop', 'event loop outside JS (socket reads, epoll)'],
  ['gc', 'allocation and GC'],
  ['scanning', 'scanning (tracker workers: compare, shadow copy)'],
  ['hashing', 'hashing (SHA-256: hash-mode fingerprints, block hashes)'],
  ['verification', 'verification digests (XXH64 regions in scans and passes; workload check)'],
  ['file_io', 'file I/O (fs reads/writes, libuv threadpool)'],
  ['migration', 'migration logic (core session, scheduler, lanes)'],
  ['other', 'other (libp2p misc, startup, timers, unattributed native)'],
  ['profiler', 'profiler overhead (v8:ProfEvntProc threads)']
]

const has = (s) => (f) => f.url.includes(s)
const fn = (re) => (f) => re.test(f.functionName)
const and = (...ps) => (f) => ps.every(p => p(f))

/**
 * Main-thread rules. A sample's stack is walked from the leaf (the frame that was running) toward
 * the root; at each frame the rules are tried in order, and the first frame that matches any rule
 * decides. Native frames (empty URL: `update`, `writev`, `read`) match nothing, so they take the
 * category of the JS function that called them.
 */
export const MAIN_RULES = [
  ['gc', 'V8 "(garbage collector)"', fn(/^\(garbage collector\)$/)],
  ['cipher', 'node:internal/crypto/cipher, @chainsafe/libp2p-noise crypto/, @noble/ciphers', (f) => f.url.includes('node:internal/crypto/cipher') || f.url.includes('@noble/ciphers') || /libp2p-noise\/dist\/src\/crypto\//.test(f.url)],
  ['hashing', 'node:internal/crypto/hash, @noble/hashes', (f) => f.url.includes('node:internal/crypto/hash') || f.url.includes('@noble/hashes')],
  ['file_io', 'node:fs, node:internal/fs/*', (f) => f.url === 'node:fs' || f.url.startsWith('node:internal/fs/')],
  ['codec', 'packages/core/dist/wire/ (codec.js, frames.js)', has('/core/dist/wire/')],
  ['verification', 'packages/core/dist/verify/, @shoal/workload, driver-synthetic', (f) => f.url.includes('/core/dist/verify/') || f.url.includes('/workload/dist/') || f.url.includes('/driver-synthetic/dist/')],
  ['mux_copies', 'yamux, it-*, uint8arraylist, uint8arrays, noise encoder/decoder, @libp2p/utils streams, node:buffer, node:internal/buffer, stream_base Buffer conversion', (f) =>
    f.url.includes('libp2p-yamux') || /node_modules\/it-[a-z-]+\//.test(f.url) || f.url.includes('uint8arraylist') ||
    f.url.includes('/uint8arrays/') || f.url.includes('libp2p-noise') || f.url.includes('@libp2p/utils/dist/src/abstract-') ||
    f.url === 'node:buffer' || f.url === 'node:internal/buffer'],
  ['socket_io', 'node:net, node:internal/stream_base_commons, node:internal/streams/*, node:stream, @libp2p/tcp', (f) =>
    f.url === 'node:net' || f.url.startsWith('node:internal/stream_base_commons') || f.url.startsWith('node:internal/streams/') ||
    f.url === 'node:stream' || f.url.includes('@libp2p/tcp/') || f.url.includes('/libp2p/dist/gathered-writes')],
  ['migration', 'packages/core/dist/ (session, scheduler, tracker, pacing), packages/libp2p/dist, packages/node/dist', (f) =>
    f.url.includes('/core/dist/') || f.url.includes('/libp2p/dist/') || f.url.includes('/node/dist/')]
]

/**
 * Worker-thread rules (the tracker's scan/digest workers), same walk. Which task the sample
 * belongs to is decided by the stack: under scan-worker's `digest` it is the verification pass,
 * under `scan` it is a scan (whose SHA-256 region digests count as hashing).
 */
export const WORKER_RULES = [
  ['gc', 'V8 "(garbage collector)"', fn(/^\(garbage collector\)$/)],
  ['file_io', 'node:fs, node:internal/fs/* (readSync of the image file)', (f) => f.url === 'node:fs' || f.url.startsWith('node:internal/fs/')],
  ['hashing', 'node:internal/crypto/hash, unless under scan-worker `digest` (then verification)', (f) => f.url.includes('node:internal/crypto/hash') || f.url.includes('@noble/hashes')],
  ['verification', 'scan-worker.js `digest`, core/dist/verify/', (f) => and(has('/tracker/scan-worker.js'), fn(/^digest$/))(f) || f.url.includes('/core/dist/verify/')],
  ['scanning', 'scan-worker.js (scan, readWindow, isZero), core/dist/tracker/, node:buffer compare/copy under them', (f) => f.url.includes('/core/dist/tracker/')]
]

/**
 * Data-worker rules (threads running the data plane's data-worker.js): their file I/O (pread of
 * the source's areas, pwrite of the staging files) and GC apart, everything is the data lanes'
 * own cost — TLS record encryption in OpenSSL under socket writes, framing, sockets.
 */
export const DATA_WORKER_RULES = [
  ['gc', 'V8 "(garbage collector)"', fn(/^\(garbage collector\)$/)],
  ['file_io', 'node:fs, node:internal/fs/* (readSync/writevSync of image files)', (f) => f.url === 'node:fs' || f.url.startsWith('node:internal/fs/')],
  ['hashing', 'node:internal/crypto/hash (hash-mode fingerprints of the bytes sent)', (f) => f.url.includes('node:internal/crypto/hash')],
  ['data_lanes', 'anything else on a data worker', () => true]
]

/** True when a worker profile is a data worker's (it ran data-worker.js). */
function isDataWorker (profile) {
  return profile.nodes.some(n => n.callFrame.url.includes('/data-plane/data-worker.js'))
}

/** Which category a stack (leaf first) belongs to under `rules`; `other` when none matches. */
function categorise (stack, rules) {
  for (const frame of stack) {
    for (const [cat, , test] of rules) {
      if (test(frame)) return cat
    }
  }
  return 'other'
}

/** Self time per category (seconds) of one profile, samples within [fromUs, toUs] only; idle dropped. */
export function profileCategories (profile, rules, fromUs = -Infinity, toUs = Infinity) {
  const byId = new Map(profile.nodes.map(n => [n.id, n]))
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const cache = new Map()
  const catOf = (id) => {
    let c = cache.get(id)
    if (c != null) return c
    const stack = []
    for (let x = id; x != null; x = parent.get(x)) stack.push(byId.get(x).callFrame)
    const leaf = stack[0]
    if (leaf.functionName === '(idle)') c = 'idle'
    else if (leaf.functionName === '(program)') c = 'other'
    else {
      c = categorise(stack, rules)
      // The worker's SHA-256 under `digest` is the verification pass, not a scan's hashing.
      if (c === 'hashing' && rules === WORKER_RULES && stack.some(f => f.functionName === 'digest' && f.url.includes('/tracker/scan-worker.js'))) c = 'verification'
    }
    cache.set(id, c)
    return c
  }
  const out = {}
  let t = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i]
    if (t < fromUs || t > toUs) continue
    // A sample's weight is the time until the next sample (V8's own convention for self time).
    const dt = (profile.timeDeltas[i + 1] ?? 0) / 1e6
    const c = catOf(profile.samples[i])
    out[c] = (out[c] ?? 0) + dt
  }
  return out
}

/** utime/stime (seconds) of every thread of this process, by tid; plus the process's fault counts. */
export function threadTimes (pid = 'self') {
  const tck = 100 // CLK_TCK on Linux
  const threads = {}
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
      threads[tid] = { comm, user: +f[11] / tck, system: +f[12] / tck }
    } catch { /* thread exited meanwhile */ }
  }
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  return { threads, minflt: +f[7], majflt: +f[9] }
}

/** Difference of two threadTimes snapshots (threads born in between count from zero). */
export function threadDelta (a, b) {
  const threads = {}
  for (const [tid, t] of Object.entries(b.threads)) {
    const o = a.threads[tid] ?? { user: 0, system: 0 }
    threads[tid] = { comm: t.comm, user: t.user - o.user, system: t.system - o.system }
  }
  return { threads, minflt: b.minflt - a.minflt, majflt: b.majflt - a.majflt }
}

/**
 * Kernel seconds per first-touch minor fault on this machine: touches fresh pages of a
 * SharedArrayBuffer (what the source's shadow copy is) and divides system time by faults.
 */
export function calibratePageFault (bytes = 256 * 2 ** 20) {
  const a = threadTimes()
  const u0 = process.cpuUsage()
  const v = new Uint8Array(new SharedArrayBuffer(bytes))
  for (let i = 0; i < bytes; i += 4096) v[i] = 1
  const u = process.cpuUsage(u0)
  const b = threadTimes()
  const faults = b.minflt - a.minflt
  return { faults, system_s: u.system / 1e6, s_per_fault: faults > 0 ? u.system / 1e6 / faults : 0 }
}

/**
 * One side's breakdown over one or more windows. `windows`: [{ fromUs, toUs, delta, roles }] where
 * delta is threadDelta over the window and roles maps tid → 'main' | 'worker:<threadId>' |
 * 'threadpool' | 'v8' | 'profiler'; `profiles`: { main: profile, 'worker:<threadId>': profile }.
 * Returns seconds per category (summed over windows) and the thread-level totals.
 */
export function sideBreakdown (windows, profiles, faultCost) {
  const cat = Object.fromEntries(CATEGORIES.map(([k]) => [k, 0]))
  const acct = { user_s: 0, system_s: 0, profiled_busy_s: 0, profiled_cpu_s: 0, threadpool_s: 0, v8_platform_s: 0, profiler_s: 0, unknown_threads_s: 0, minflt: 0, majflt: 0 }
  // CPU by kind of thread: what stays serial (main) against what scales (workers).
  const threads = { main_s: 0, data_workers_s: 0, tracker_workers_s: 0, threadpool_s: 0, v8_platform_s: 0, profiler_s: 0, other_s: 0 }
  for (const w of windows) {
    acct.minflt += w.delta.minflt
    acct.majflt += w.delta.majflt
    for (const [tid, t] of Object.entries(w.delta.threads)) {
      const cpu = t.user + t.system
      acct.user_s += t.user
      acct.system_s += t.system
      const role = w.roles[tid] ?? (t.comm === 'v8:ProfEvntProc' ? 'profiler' : 'unknown')
      const prof = profiles[role]
      const data = role.startsWith('worker:') && prof != null && isDataWorker(prof)
      threads[role === 'main' ? 'main_s' : data ? 'data_workers_s' : role.startsWith('worker:') ? 'tracker_workers_s' : role === 'threadpool' ? 'threadpool_s' : role === 'v8' ? 'v8_platform_s' : role === 'profiler' ? 'profiler_s' : 'other_s'] += cpu
      if ((role === 'main' || role.startsWith('worker:')) && prof != null) {
        const c = profileCategories(prof, role === 'main' ? MAIN_RULES : data ? DATA_WORKER_RULES : WORKER_RULES, w.fromUs, w.toUs)
        delete c.idle
        const busy = Object.values(c).reduce((x, y) => x + y, 0)
        acct.profiled_busy_s += busy
        acct.profiled_cpu_s += cpu
        // Scale the profile to the thread's real CPU; CPU it did not see ran outside JS while
        // the loop was marked idle (main thread: socket reads, epoll).
        const seen = Math.min(busy, cpu)
        for (const [k, v] of Object.entries(c)) cat[k] += busy > 0 ? v / busy * seen : 0
        // A data worker's unseen CPU is its sockets' reads and TLS decryption (libuv callbacks).
        cat[role === 'main' ? 'event_loop' : data ? 'data_lanes' : 'other'] += cpu - seen
      } else if (role === 'threadpool') { cat.file_io += cpu; acct.threadpool_s += cpu } else if (role === 'v8') { cat.gc += cpu; acct.v8_platform_s += cpu } else if (role === 'profiler') { cat.profiler += cpu; acct.profiler_s += cpu } else { cat.other += cpu; acct.unknown_threads_s += cpu }
    }
  }
  const pageFault = Math.min(acct.system_s, (acct.minflt + acct.majflt) * faultCost)
  return { seconds: cat, acct, threads, pageFault_s: pageFault }
}

/**
 * The table: rows = category, columns = source and destination CPU-s per GiB and each row's share
 * of both sides' total. Page faults are a "within" row (their time is inside the other rows).
 */
export function breakdownTable (src, dst, gib) {
  const total = (s) => Object.values(s.seconds).reduce((x, y) => x + y, 0)
  const all = total(src) + total(dst)
  const rows = CATEGORIES.map(([k, label]) => ({
    category: label,
    source_cpu_s_per_GiB: +(src.seconds[k] / gib).toFixed(3),
    dest_cpu_s_per_GiB: +(dst.seconds[k] / gib).toFixed(3),
    share_pct: +(100 * (src.seconds[k] + dst.seconds[k]) / all).toFixed(1)
  }))
  rows.push({
    category: 'total (user + system)',
    source_cpu_s_per_GiB: +(total(src) / gib).toFixed(3),
    dest_cpu_s_per_GiB: +(total(dst) / gib).toFixed(3),
    share_pct: 100
  })
  rows.push({
    category: '  of which system (kernel)',
    source_cpu_s_per_GiB: +(src.acct.system_s / gib).toFixed(3),
    dest_cpu_s_per_GiB: +(dst.acct.system_s / gib).toFixed(3),
    share_pct: +(100 * (src.acct.system_s + dst.acct.system_s) / all).toFixed(1)
  })
  rows.push({
    category: '  page faults, est. kernel time (within rows above)',
    source_cpu_s_per_GiB: +(src.pageFault_s / gib).toFixed(3),
    dest_cpu_s_per_GiB: +(dst.pageFault_s / gib).toFixed(3),
    share_pct: +(100 * (src.pageFault_s + dst.pageFault_s) / all).toFixed(1)
  })
  return rows
}
