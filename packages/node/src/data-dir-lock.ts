import { createHash } from 'node:crypto'
import { readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import type { Server } from 'node:net'
import { join } from 'node:path'
import { DataDirLockedError } from '@shoal/core'

/** File beside the lock naming the process that holds it (for the error message only). */
const OWNER_FILE = 'node.pid'

/** A held data-dir lock; `release()` frees it. */
export interface DataDirLock {
  release: () => Promise<void>
}

/**
 * Takes the exclusive lock of a data directory, so that two nodes never run on one data dir (two
 * nodes would each start the same images: two writers on one image).
 *
 * The lock is a Linux abstract unix socket named after the directory's real path: binding it is
 * atomic, and the kernel releases it when the process dies, also on `kill -9`, so a crashed node
 * never leaves a stale lock to clean up (a lock file would). Abstract sockets live in a network
 * namespace: nodes sharing a data dir from different namespaces are not caught (say so to users
 * who run nodes in namespaces). Throws {@link DataDirLockedError} naming the holder's pid.
 */
export async function lockDataDir (dataDir: string): Promise<DataDirLock> {
  const real = realpathSync(dataDir)
  const name = `\0shoal-data-dir-${createHash('sha256').update(real).digest('hex').slice(0, 32)}`
  const server: Server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EADDRINUSE') { reject(err); return }
      let holder = 'another process'
      try { holder = `process ${readFileSync(join(real, OWNER_FILE), 'utf8').trim()}` } catch {}
      reject(new DataDirLockedError(`another node (${holder}) runs on the data dir ${real}; stop it first or use another --data-dir`))
    })
    server.listen(name, () => { resolve() })
  })
  // Never keep the process alive for the lock alone.
  server.unref()
  writeFileSync(join(real, OWNER_FILE), `${process.pid}\n`)
  return {
    async release () {
      rmSync(join(real, OWNER_FILE), { force: true })
      await new Promise<void>(resolve => { server.close(() => { resolve() }) })
    }
  }
}
