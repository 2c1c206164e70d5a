import { execFile } from 'node:child_process'
import { stat } from 'node:fs/promises'

/** Bytes [start, end) of a file that hold data (everything outside them reads as zeros). */
export interface Extent { start: number, end: number }

/**
 * Finds the data extents of a file, or resolves `undefined` when they are unknown (then the
 * whole file is read). Taken once per scan, before the scan reads anything.
 */
export type DataExtentsProbe = (path: string, size: number) => Promise<Extent[] | undefined>

/** Options of {@link createExtentProbe}. */
export interface ExtentProbeInit {
  /** The Perl interpreter to run (default `perl`); a missing one turns the probe off for good. */
  perl?: string
  /** Give up on one probe after this many milliseconds (default 5000): the scan then reads all. */
  timeoutMs?: number
}

// lseek(SEEK_DATA = 3) / lseek(SEEK_HOLE = 4) in a loop: Perl's sysseek passes `whence` through
// to lseek(2). `$d+0` because sysseek returns "0 but true" for offset 0.
const SCRIPT = 'open(my $f,"<",$ARGV[0]) or die "$!\\n"; my $e=$ARGV[1]; my $o=0; ' +
  'while ($o < $e) { my $d = sysseek($f, $o, 3); last unless defined $d; my $h = sysseek($f, $d, 4); ' +
  'last unless defined $h; print $d+0, " ", $h+0, "\\n"; $o = $h }'

/**
 * A probe that asks the kernel for the data extents of a file with `lseek(SEEK_DATA/SEEK_HOLE)`.
 *
 * Node has no binding for those `whence` values, and a native addon is not an option here, so
 * the probe runs a one-line Perl script (perl-base is an essential package on Debian). Measured
 * on this machine kind (2 vCPU, ext4 and tmpfs): 4–7 ms per probe from Node, once per scan, for a
 * 16 GiB file with 645 extents; Python's `os.lseek` took 130 ms (interpreter start), `filefrag`
 * (FIEMAP) 3 ms but does not work on tmpfs, where memory files live. Reading the holes instead
 * cost 7.1 s per 4 GiB on ext4 (the kernel fills page-cache pages with zeros) and 190 ms per
 * 2 GiB on tmpfs. A file with no holes (allocated blocks cover its size) skips the probe.
 */
export function createExtentProbe (init: ExtentProbeInit = {}): DataExtentsProbe {
  const perl = init.perl ?? 'perl'
  const timeout = init.timeoutMs ?? 5000
  let unavailable = false
  return async (path, size) => {
    if (unavailable || size === 0) return undefined
    const st = await stat(path).catch(() => undefined)
    // Dense (or unknown) file: nothing to skip, spare the probe.
    if (st == null || st.blocks * 512 >= Math.min(size, st.size)) return undefined
    return await new Promise<Extent[] | undefined>((resolve) => {
      execFile(perl, ['-e', SCRIPT, path, String(Math.min(size, st.size))], { timeout, maxBuffer: 256 * 1024 * 1024 }, (err, out) => {
        if (err != null) {
          // No interpreter at all: don't try again for every scan.
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') unavailable = true
          resolve(undefined)
          return
        }
        resolve(parseExtents(out))
      })
    })
  }
}

/** Parses `start end` lines; undefined when anything is malformed (the scan then reads all). */
export function parseExtents (text: string): Extent[] | undefined {
  const out: Extent[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    const [a, b] = line.split(' ').map(Number)
    if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b) || a! < 0 || b! <= a!) return undefined
    out.push({ start: a!, end: b! })
  }
  return out
}

/**
 * Bitmap (1 bit per unit) of the units lying wholly inside holes, given the data extents of a
 * file of `units` units. The file's bytes past its end read as zeros too, so they count as holes.
 */
export function holeUnits (extents: readonly Extent[], unitSize: number, units: number): SharedArrayBuffer {
  const buf = new SharedArrayBuffer(Math.max(1, Math.ceil(units / 8)))
  const bits = new Uint8Array(buf)
  bits.fill(0xff)
  for (const e of extents) {
    const from = Math.floor(e.start / unitSize)
    const to = Math.min(units, Math.ceil(e.end / unitSize))
    for (let u = from; u < to; u++) bits[u >>> 3]! &= ~(1 << (u & 7))
  }
  return buf
}
