import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { AbortedError, fromErrorInfo } from '../errors.js'
import type { DigestTask, ScanTask, WorkerReply, WorkerTask } from './worker-protocol.js'

/** Options of {@link createWorkerPool}. */
export interface WorkerPoolInit {
  /** Number of worker threads; default = number of cores. */
  workers?: number
}

/** A pool of scan/digest worker threads; tasks queue and the next idle worker takes one. */
export interface WorkerPool {
  readonly size: number
  /** Runs one task on the next idle worker. */
  run: (task: TaskInput) => Promise<WorkerReply>
  /** Terminates every worker; queued tasks reject. */
  stop: () => Promise<void>
}

/** A task without its id (the pool numbers tasks). */
export type TaskInput = Omit<ScanTask, 'id'> | Omit<DigestTask, 'id'>

interface Pending { task: WorkerTask, resolve: (r: WorkerReply) => void, reject: (e: Error) => void }

/** Starts a pool of tracker workers. Call `stop()` to release the threads. */
export function createWorkerPool (init: WorkerPoolInit = {}): WorkerPool {
  const size = Math.max(1, init.workers ?? availableParallelism())
  const url = new URL('./scan-worker.js', import.meta.url)
  const idle: Worker[] = []
  const busy = new Map<Worker, Pending>()
  const queue: Pending[] = []
  let nextId = 1
  let stopped = false

  const dispatch = (): void => {
    while (idle.length > 0 && queue.length > 0) {
      const w = idle.pop()!
      const p = queue.shift()!
      busy.set(w, p)
      w.postMessage(p.task)
    }
  }

  const workers = Array.from({ length: size }, () => {
    const w = new Worker(url)
    w.on('message', (reply: WorkerReply) => {
      const p = busy.get(w)
      busy.delete(w)
      idle.push(w)
      if (p != null) {
        // The worker's error comes back as its class with its code (see worker-protocol.ts).
        if (reply.errorInfo != null) p.reject(fromErrorInfo(reply.errorInfo))
        else if (reply.error != null) p.reject(fromErrorInfo({ code: 'ERR_INTERNAL', name: 'Error', message: reply.error }))
        else p.resolve(reply)
      }
      dispatch()
    })
    w.on('error', (err) => {
      const p = busy.get(w)
      busy.delete(w)
      p?.reject(err)
    })
    idle.push(w)
    return w
  })

  return {
    size,
    async run (task) {
      if (stopped) throw new AbortedError('worker pool stopped')
      return await new Promise<WorkerReply>((resolve, reject) => {
        queue.push({ task: { ...task, id: nextId++ } as WorkerTask, resolve, reject })
        dispatch()
      })
    },
    async stop () {
      if (stopped) return
      stopped = true
      for (const p of queue.splice(0)) p.reject(new AbortedError('worker pool stopped'))
      for (const p of busy.values()) p.reject(new AbortedError('worker pool stopped'))
      busy.clear()
      await Promise.all(workers.map(async w => await w.terminate()))
    }
  }
}
