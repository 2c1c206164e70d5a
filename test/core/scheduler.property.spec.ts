import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { ChunkScheduler, NoLanesError } from '@shoal/core'

// Properties of the pull-based chunk scheduler (packages/core/src/scheduler/chunk-scheduler.ts)
// under any interleaving of lanes taking, acknowledging and failing, with chunks pushed meanwhile.

interface C { id: number, bytes: number }

/** One step of a run; lane numbers and picks are taken modulo what exists at that moment. */
type Op =
  | { op: 'push', n: number }
  | { op: 'addLane' }
  | { op: 'take', lane: number }
  | { op: 'ack', lane: number, pick: number }
  | { op: 'dupAck', lane: number, pick: number }
  | { op: 'fail', lane: number }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ op: fc.constant('push' as const), n: fc.integer({ min: 1, max: 5 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('addLane' as const) }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant('take' as const), lane: fc.nat() }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('ack' as const), lane: fc.nat(), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('dupAck' as const), lane: fc.nat(), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('fail' as const), lane: fc.nat() }) }
)

/** Lets every promise continuation that is ready run (takers woken by push/fail/close). */
const settle = async (): Promise<void> => { for (let i = 0; i < 5; i++) await Promise.resolve() }

/**
 * Runs `ops` against a real scheduler and a model of it, checking after every step:
 * - conservation: queued + in flight + acknowledged = pushed (nothing lost, nothing invented);
 * - a chunk is in flight on at most one lane, and is handed out again only after the lane that
 *   held it failed (hand-outs of a chunk = 1 + failures of lanes holding it);
 * - a failed lane's chunks return to the front of the queue in id order, and the count says so;
 * - a failed lane gets nothing more;
 * - acknowledgements are counted once (a duplicate returns undefined).
 * Then a fresh lane drains the rest: every pushed chunk ends acknowledged exactly once and
 * `idle()` resolves.
 */
async function runOps (ops: Op[], initialLanes: number): Promise<void> {
  const s = new ChunkScheduler<C>()
  let nextId = 1
  let laneSeq = 0
  const live: string[] = []
  const failedLanes = new Set<string>()
  const inFlight = new Map<string, Set<number>>() // model: lane → ids
  const acked = new Set<number>()
  const handOuts = new Map<number, number>()
  const requeues = new Map<number, number>()
  /** Takers waiting on an empty queue; they may be served by a later push. */
  const waiting = new Map<string, { result?: { c: C | undefined } }>()
  let pushed = 0
  let noLanes = false
  let closed = false

  const record = (lane: string, c: C | undefined): void => {
    if (c == null) { expect(failedLanes.has(lane) || noLanes || closed).toBe(true); return }
    expect(failedLanes.has(lane)).toBe(false)
    for (const [l, ids] of inFlight) expect(ids.has(c.id), `chunk ${c.id} handed to ${lane} while in flight on ${l}`).toBe(false)
    expect(acked.has(c.id)).toBe(false)
    inFlight.get(lane)!.add(c.id)
    handOuts.set(c.id, (handOuts.get(c.id) ?? 0) + 1)
  }
  const addLane = (): void => {
    const l = `l${laneSeq++}`
    s.addLane(l); live.push(l); inFlight.set(l, new Set())
  }
  const collect = async (): Promise<void> => {
    await settle()
    // A waiter either resolved (record it) or is still waiting; poll without blocking.
    for (const [lane, w] of [...waiting]) {
      if (w.result != null) { waiting.delete(lane); record(lane, w.result.c) }
    }
  }
  const check = (): void => {
    let flying = 0
    for (const ids of inFlight.values()) flying += ids.size
    expect(s.pending).toBe(flying)
    expect(s.queued + s.pending + acked.size).toBe(pushed)
    expect(new Set(s.lanes)).toEqual(new Set(live))
  }

  for (let i = 0; i < initialLanes; i++) addLane()
  for (const o of ops) {
    const lane = live.length > 0 ? live[('lane' in o ? o.lane : 0) % live.length]! : undefined
    switch (o.op) {
      case 'push': {
        const cs = Array.from({ length: o.n }, () => ({ id: nextId++, bytes: 1 }))
        pushed += cs.length
        s.push(cs)
        break
      }
      case 'addLane':
        if (!noLanes) addLane()
        break
      case 'take':
        if (lane == null || waiting.has(lane)) break
        const w: { result?: { c: C | undefined } } = {}
        waiting.set(lane, w)
        void s.take(lane).then(c => { w.result = { c } })
        break
      case 'ack':
      case 'dupAck': {
        if (lane == null) break
        const ids = [...inFlight.get(lane)!]
        if (ids.length === 0) { expect(s.complete(lane, 1e9)).toBeUndefined(); break }
        const id = ids[o.pick % ids.length]!
        expect(s.complete(lane, id)?.id).toBe(id)
        inFlight.get(lane)!.delete(id); acked.add(id)
        if (o.op === 'dupAck') expect(s.complete(lane, id)).toBeUndefined()
        break
      }
      case 'fail': {
        if (lane == null) break
        const held = [...inFlight.get(lane)!].sort((a, b) => a - b)
        const queuedBefore = s.queued
        expect(s.failLane(lane)).toBe(held.length)
        expect(s.queued).toBe(queuedBefore + held.length)
        for (const id of held) requeues.set(id, (requeues.get(id) ?? 0) + 1)
        live.splice(live.indexOf(lane), 1); failedLanes.add(lane); inFlight.delete(lane)
        if (live.length === 0 && s.queued > 0) noLanes = true
        // The re-queued chunks come first, in id order: a live lane without a waiting taker proves it.
        const probe = live.find(l => !waiting.has(l))
        await collect()
        if (probe != null && held.length > 0 && !waiting.has(probe) && s.queued >= held.length) {
          const first = await s.take(probe)
          record(probe, first)
          expect(first!.id).toBe(held[0])
        }
        break
      }
    }
    await collect()
    check()
  }

  if (noLanes) {
    // The last lane died with work left: idle() reports it instead of waiting forever.
    await expect(s.idle()).rejects.toBeInstanceOf(NoLanesError)
    return
  }
  // Drain: acknowledge everything in flight, then a fresh lane takes and acknowledges the rest.
  for (const [lane, ids] of inFlight) for (const id of [...ids]) { expect(s.complete(lane, id)?.id).toBe(id); ids.delete(id); acked.add(id) }
  const idle = s.idle()
  addLane()
  const drain = live[live.length - 1]!
  while (s.queued > 0) {
    const c = await s.take(drain)
    record(drain, c)
    expect(s.complete(drain, c!.id)?.id).toBe(c!.id)
    inFlight.get(drain)!.delete(c!.id); acked.add(c!.id)
  }
  // Waiting takers on other lanes may still hold chunks the drain did not see.
  s.close(); closed = true
  await collect()
  expect(waiting.size).toBe(0)
  for (const [lane, ids] of inFlight) for (const id of [...ids]) { s.complete(lane, id); ids.delete(id); acked.add(id) }
  await idle
  expect(acked.size).toBe(pushed)
  for (let id = 1; id < nextId; id++) {
    expect(acked.has(id)).toBe(true)
    expect(handOuts.get(id) ?? 0).toBe(1 + (requeues.get(id) ?? 0))
  }
}

describe('chunk scheduler properties', () => {
  it('every chunk is acknowledged exactly once, and handed out again only when its lane failed', async () => {
    await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 80 }), fc.integer({ min: 1, max: 4 }), async (ops, lanes) => {
      await runOps(ops, lanes)
    }), { numRuns: 400 })
  })

  it('a failed lane is ended: its waiting taker gets undefined, and so does every later take', async () => {
    await fc.assert(fc.asyncProperty(fc.integer({ min: 0, max: 5 }), async (chunks) => {
      const s = new ChunkScheduler<C>()
      s.addLane('a'); s.addLane('b')
      const waiting = s.take('a')
      s.failLane('a')
      expect(await waiting).toBeUndefined()
      s.push(Array.from({ length: chunks }, (_, i) => ({ id: i + 1, bytes: 1 })))
      expect(await s.take('a')).toBeUndefined()
      expect(s.queued).toBe(chunks)
    }), { numRuns: 20 })
  })

  it('in-flight bytes of a lane are the sum of its unacknowledged chunks', async () => {
    await fc.assert(fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 1 << 20 }), { minLength: 1, maxLength: 30 }), fc.array(fc.boolean(), { maxLength: 30 }), async (sizes, acks) => {
      const s = new ChunkScheduler<C>()
      s.addLane('a')
      s.push(sizes.map((bytes, i) => ({ id: i + 1, bytes })))
      let expected = 0
      for (let i = 0; i < sizes.length; i++) {
        const c = (await s.take('a'))!
        expected += c.bytes
        if (acks[i] === true) { s.complete('a', c.id); expected -= c.bytes }
        expect(s.inFlightBytes('a')).toBe(expected)
      }
    }), { numRuns: 100 })
  })
})
