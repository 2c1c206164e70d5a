/**
 * The workload's side of a post-copy cache: a block that is not present yet is asked for on the
 * node's fault socket before it is touched (`R <block>` to read or partly write it, `W <block>` to
 * overwrite it whole), and used only once the node answered `OK <block>` or set the block's byte
 * in the present file (contract: `PostCopyAccess` in @shoal/core `driver/driver.ts`).
 *
 * A block is never taken as present on any other evidence: when the socket cannot be reached or
 * drops (the node restarting), requests stay outstanding, the present file is re-read and the
 * connection retried with backoff, and whatever is still missing is asked for again.
 */

import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs'
import { createConnection, type Socket } from 'node:net'
import { AbortedError } from '@shoal/core/errors'
import { FAULT_PRESENT_POLL_MS, FAULT_RETRY_MAX_MS, FAULT_RETRY_MIN_MS } from './constants.js'
import { CacheFaultError, InvalidArgumentError } from './errors.js'

/** Options of {@link createFaultClient}. */
export interface FaultClientInit {
  /** The node's present file: one byte per cache block, 1 once the block holds its final bytes. */
  presentPath: string
  /** The node's fault socket (unix socket path). */
  socketPath: string
  /** Blocks of the cache (the present file must have exactly one byte per block). */
  blocks: number
  /** First reconnect delay; default {@link FAULT_RETRY_MIN_MS}, doubling up to `retryMaxMs`. */
  retryMinMs?: number
  /** Longest reconnect delay; default {@link FAULT_RETRY_MAX_MS}. */
  retryMaxMs?: number
  /** Re-check of outstanding blocks in the present file while connected; default {@link FAULT_PRESENT_POLL_MS}. */
  pollMs?: number
}

/** A connection to the node's fault service, shared by everything in the workload that touches the cache. */
export interface FaultClient {
  /** Whether `block` holds its final bytes (known from an earlier answer, else read from the present file). */
  isPresent: (block: number) => boolean
  /**
   * Resolves once `block` may be used: at once when it is present, else after the node's `OK`.
   * `whole`: the caller overwrites the whole block (a `W` request: nothing is fetched). One
   * request serves every concurrent caller of a block, whichever kind it was sent as.
   *
   * @throws CacheFaultError when the node answers `ERR`; AbortedError when closed or `signal` aborts
   */
  ensure: (block: number, whole: boolean, signal?: AbortSignal) => Promise<void>
  /** Requests waiting for an answer. */
  readonly outstanding: number
  /** Closes the socket, timers and present file; outstanding ensures reject with AbortedError. */
  close: () => void
}

interface FaultRequest {
  readonly block: number
  readonly kind: 'R' | 'W'
  readonly promise: Promise<void>
  readonly resolve: () => void
  readonly reject: (error: Error) => void
}

const ANSWER = /^(OK|ERR) (\d+)(?: (\S+))?$/
/** Longest answer line accepted; anything longer is not the protocol, and the connection is dropped. */
const MAX_LINE = 256

/**
 * Opens the present file and connects lazily (on the first block that must be asked for).
 *
 * @throws InvalidArgumentError when the present file does not have one byte per block, or the fs error
 */
export function createFaultClient (init: FaultClientInit): FaultClient {
  const { blocks, socketPath, presentPath } = init
  if (!Number.isSafeInteger(blocks) || blocks < 0) throw new InvalidArgumentError(`block count must be a non-negative integer (got ${blocks})`, '--block-size')
  const retryMinMs = init.retryMinMs ?? FAULT_RETRY_MIN_MS
  const retryMaxMs = init.retryMaxMs ?? FAULT_RETRY_MAX_MS
  const pollMs = init.pollMs ?? FAULT_PRESENT_POLL_MS

  let fd = openPresentFile(presentPath, blocks)
  // Blocks known present: a block once present stays present, so a 1 is never read twice.
  const known = new Uint8Array(blocks)
  const byte = Buffer.alloc(1)
  const requests = new Map<number, FaultRequest>()
  let socket: Socket | undefined
  let connected = false
  let input = ''
  let retryMs = retryMinMs
  let retryTimer: NodeJS.Timeout | undefined
  let pollTimer: NodeJS.Timeout | undefined
  let closed = false

  const isPresent = (block: number): boolean => {
    if (known[block] === 1) return true
    if (readSync(fd, byte, 0, 1, block) === 1 && byte[0] === 1) {
      known[block] = 1
      return true
    }
    return false
  }

  const settle = (block: number, error?: Error): void => {
    const request = requests.get(block)
    if (request === undefined) return
    requests.delete(block)
    if (requests.size === 0) {
      clearInterval(pollTimer)
      pollTimer = undefined
    }
    if (error !== undefined) {
      request.reject(error)
      return
    }
    // After an OK the block is present (fetched, or owned by the writer that asked with W).
    known[block] = 1
    request.resolve()
  }

  /** Settles every outstanding request whose block the present file now shows present. */
  const recheck = (): void => {
    for (const block of [...requests.keys()]) {
      if (isPresent(block)) settle(block)
    }
  }

  const send = (request: FaultRequest): void => {
    if (connected && socket !== undefined) socket.write(`${request.kind} ${request.block}\n`)
  }

  const onData = (chunk: string): void => {
    input += chunk
    let newline = input.indexOf('\n')
    while (newline !== -1) {
      const line = input.slice(0, newline).trim()
      input = input.slice(newline + 1)
      newline = input.indexOf('\n')
      const answer = ANSWER.exec(line)
      // Lines that are not answers (a newer node's additions) are not ours to act on.
      if (answer === null) continue
      // Backoff restarts only once the node answers: one that accepts and drops stays backed off.
      retryMs = retryMinMs
      const block = Number(answer[2])
      if (answer[1] === 'OK') settle(block)
      else settle(block, new CacheFaultError(`the node refused block ${block}: ${answer[3] ?? 'no code'}`, block, answer[3]))
    }
    if (input.length > MAX_LINE) socket?.destroy()
  }

  const scheduleRetry = (): void => {
    if (closed || retryTimer !== undefined || socket !== undefined || requests.size === 0) return
    retryTimer = setTimeout(() => {
      retryTimer = undefined
      refreshPresentFile()
      recheck()
      connect()
    }, retryMs)
    retryMs = Math.min(retryMs * 2, retryMaxMs)
  }

  const connect = (): void => {
    if (closed || socket !== undefined || retryTimer !== undefined || requests.size === 0) return
    const s = createConnection(socketPath)
    socket = s
    s.setEncoding('latin1')
    s.on('connect', () => {
      connected = true
      // Whatever was asked before (on a connection that dropped) is asked again.
      recheck()
      for (const request of requests.values()) send(request)
    })
    s.on('data', onData)
    // A refused or dropped connection is retried from 'close', which follows every error.
    s.on('error', () => {})
    s.on('close', () => {
      if (socket !== s) return
      socket = undefined
      connected = false
      input = ''
      scheduleRetry()
    })
  }

  /** A node that restarted may have replaced the present file: follow the path to the new one. */
  const refreshPresentFile = (): void => {
    try {
      const onDisk = statSync(presentPath)
      const open = fstatSync(fd)
      if (onDisk.ino === open.ino && onDisk.dev === open.dev) return
      const next = openPresentFile(presentPath, blocks)
      closeSync(fd)
      fd = next
    } catch {
      // Keep the file we have: its 1s stay true, and the socket answers for the rest.
    }
  }

  const request = (block: number, whole: boolean): FaultRequest => {
    let resolve!: () => void
    let reject!: (error: Error) => void
    const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej })
    // Callers that gave up (aborted) leave the shared promise unobserved: not an unhandled rejection.
    promise.catch(() => {})
    const r: FaultRequest = { block, kind: whole ? 'W' : 'R', promise, resolve, reject }
    requests.set(block, r)
    pollTimer ??= setInterval(recheck, pollMs)
    if (connected) send(r)
    else connect()
    return r
  }

  return {
    isPresent (block) {
      checkBlock(block, blocks)
      return isPresent(block)
    },
    async ensure (block, whole, signal) {
      checkBlock(block, blocks)
      if (closed) throw new AbortedError('the fault client is closed')
      signal?.throwIfAborted()
      if (isPresent(block)) return
      const r = requests.get(block) ?? request(block, whole)
      await (signal === undefined ? r.promise : abortable(r.promise, signal))
    },
    get outstanding () {
      return requests.size
    },
    close () {
      if (closed) return
      closed = true
      clearTimeout(retryTimer)
      clearInterval(pollTimer)
      retryTimer = undefined
      pollTimer = undefined
      socket?.destroy()
      socket = undefined
      const error = new AbortedError('the fault client is closed')
      for (const block of [...requests.keys()]) settle(block, error)
      closeSync(fd)
    }
  }
}

function checkBlock (block: number, blocks: number): void {
  if (!Number.isSafeInteger(block) || block < 0 || block >= blocks) {
    throw new InvalidArgumentError(`block ${block} is outside the cache (${blocks} blocks)`)
  }
}

function openPresentFile (path: string, blocks: number): number {
  const fd = openSync(path, 'r')
  if (fstatSync(fd).size !== blocks) {
    closeSync(fd)
    throw new InvalidArgumentError(`${path} must have one byte per cache block (${blocks})`, '--cache-present')
  }
  return fd
}

async function abortable (promise: Promise<void>, signal: AbortSignal): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      () => { signal.removeEventListener('abort', onAbort); resolve() },
      (error: unknown) => { signal.removeEventListener('abort', onAbort); reject(error) }
    )
  })
}
