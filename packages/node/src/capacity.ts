import { decodeFrame, FRAME_HEADER_SIZE, FrameType, fromErrorInfo, PeerUnreachableError, PROTOCOL_VERSION, TimeoutError } from '@shoal/core'
import type { Lane, LaneTransport } from '@shoal/core'
import { z } from 'zod'
import { mib } from './admission.js'
import { describeIssues } from './api-schemas.js'

/** The protocol a node answers with what it can still take (one JSON frame, then close). */
export const CAPACITY_PROTOCOL = '/shoal/capacity/1.0.0'
/** The protocol a node tells its capacity on unasked, to the peers it would take images from. */
export const CAPACITY_ANNOUNCE_PROTOCOL = '/shoal/capacity-announce/1.0.0'
/** Largest answer a node sends or reads. */
export const MAX_CAPACITY_FRAME = 4096
/** How long a capacity question may take. */
export const CAPACITY_TIMEOUT_MS = 5000

const bytes = z.number().int().min(0)

/**
 * What a node can still take, told to an allow-listed peer that asks: the free room its admission
 * control would grant an incoming migration from that peer right now (margins and images already
 * arriving deducted), its limits, and its sessions.
 */
export const nodeCapacity = z.strictObject({
  /** Workload memory it can still admit: the shm dir's free space and the host's available memory. */
  memoryFree: bytes,
  /** Cache it can still admit (the data dir's free space). */
  cacheFree: bytes,
  /** Memory and cache come out of one file system: an image's memory + cache must fit `cacheFree`. */
  sharedSpace: z.boolean(),
  maxMemoryBytes: bytes,
  maxCacheBytes: bytes,
  maxIncoming: z.number().int().min(0),
  maxIncomingPerPeer: z.number().int().min(0),
  /** Incoming migrations now, all peers. */
  incoming: z.number().int().min(0),
  /** Incoming migrations now from the peer that asks, and the room they hold. */
  incomingFromYou: z.number().int().min(0),
  heldFromYou: z.strictObject({ memory: bytes, cache: bytes }),
  /** Images it hosts. */
  images: z.number().int().min(0)
})
export type NodeCapacity = z.output<typeof nodeCapacity>

/**
 * The answer's frame: core's frame header (length, version) with a type of this protocol's own,
 * then the JSON. A refusal on this protocol is core's ABORT frame, so the type tells them apart.
 */
const CAPACITY_FRAME_TYPE = 0xc0

function encodeAnswer (capacity: NodeCapacity): Uint8Array {
  const json = Buffer.from(JSON.stringify(capacity))
  const frame = Buffer.alloc(FRAME_HEADER_SIZE + json.byteLength)
  frame.writeUInt32LE(json.byteLength + 2, 0)
  frame.writeUInt8(PROTOCOL_VERSION, 4)
  frame.writeUInt8(CAPACITY_FRAME_TYPE, 5)
  frame.set(json, FRAME_HEADER_SIZE)
  return frame
}

/** Answers one capacity question on an accepted lane. */
export async function answerCapacity (lane: Lane, capacity: NodeCapacity): Promise<void> {
  try {
    await lane.send(encodeAnswer(capacity))
    await lane.close()
  } catch {
    lane.abort()
  }
}

/**
 * The capacity a frame carries (an answer or an announcement), checked against the schema; a
 * refusal (core's ABORT frame) is thrown as its error, anything else as `ERR_PEER_UNREACHABLE`.
 */
export function parseCapacityFrame (frame: Uint8Array, peer: string): NodeCapacity {
  if (frame[5] !== CAPACITY_FRAME_TYPE) {
    // Not an answer: a refusal (one ABORT frame naming the cause).
    const f = decodeFrame(frame)
    if (f.type === FrameType.Abort) throw fromErrorInfo({ name: 'Error', code: f.code, message: `peer ${peer}: ${f.message}` })
    throw new PeerUnreachableError(`peer ${peer} told its capacity with a ${FrameType[f.type]} frame`)
  }
  let raw: unknown
  try {
    raw = JSON.parse(Buffer.from(frame.subarray(FRAME_HEADER_SIZE)).toString('utf8'))
  } catch {
    throw new PeerUnreachableError(`peer ${peer} told its capacity in malformed JSON`)
  }
  const r = nodeCapacity.safeParse(raw)
  if (!r.success) throw new PeerUnreachableError(`peer ${peer} told a bad capacity: ${describeIssues(r.error)}`)
  return r.data
}

/** The first frame of a lane, or undefined when the lane ends first; rejects when `signal` aborts. */
async function firstFrame (lane: Lane, signal: AbortSignal, onTimeout: () => Error): Promise<Uint8Array | undefined> {
  const reading = (async () => {
    for await (const frame of lane) return frame
    return undefined
  })()
  const aborted = new Promise<never>((_resolve, reject) => {
    const fail = (): void => { reject(signal.reason instanceof DOMException && signal.reason.name === 'TimeoutError' ? onTimeout() : signal.reason) }
    if (signal.aborted) fail()
    else signal.addEventListener('abort', fail, { once: true })
  })
  return await Promise.race([reading, aborted])
}

/**
 * Asks a peer what it can take. A peer whose allow-list does not hold this node refuses the
 * question (`ERR_UNAUTHORIZED_PEER`): it would refuse the migration too.
 */
export async function askCapacity (transport: LaneTransport, peer: string, signal?: AbortSignal): Promise<NodeCapacity> {
  const timeout = AbortSignal.timeout(CAPACITY_TIMEOUT_MS)
  const both = signal != null ? AbortSignal.any([signal, timeout]) : timeout
  let lane: Lane | undefined
  try {
    [lane] = await transport.openLanes(peer, CAPACITY_PROTOCOL, 1, { signal: both, maxFrameSize: MAX_CAPACITY_FRAME })
    const frame = await firstFrame(lane!, both, () => new TimeoutError(`peer ${peer} did not tell its capacity within ${CAPACITY_TIMEOUT_MS} ms`))
    if (frame == null) throw new PeerUnreachableError(`peer ${peer} closed the capacity stream without an answer`)
    return parseCapacityFrame(frame, peer)
  } finally {
    lane?.abort()
  }
}

/**
 * Tells a connected peer, unasked, what this node can take from it (`/shoal/capacity-announce/1.0.0`):
 * one frame, the same as an answer, then close.
 */
export async function announceCapacity (transport: LaneTransport, peer: string, capacity: NodeCapacity, signal?: AbortSignal): Promise<void> {
  const timeout = AbortSignal.timeout(CAPACITY_TIMEOUT_MS)
  const both = signal != null ? AbortSignal.any([signal, timeout]) : timeout
  const [lane] = await transport.openLanes(peer, CAPACITY_ANNOUNCE_PROTOCOL, 1, { signal: both, maxFrameSize: MAX_CAPACITY_FRAME })
  try {
    await lane!.send(encodeAnswer(capacity))
  } catch (err) {
    lane!.abort()
    throw err
  }
  // The peer ends the lane once it has the frame; how the close ends changes nothing.
  await lane!.close().catch(() => {})
}

/** Reads one announcement from an accepted lane (bounded in size and time), then closes it. */
export async function readAnnouncement (lane: Lane, peer: string): Promise<NodeCapacity> {
  try {
    const frame = await firstFrame(lane, AbortSignal.timeout(CAPACITY_TIMEOUT_MS), () => new TimeoutError(`peer ${peer} opened a capacity announcement and sent nothing within ${CAPACITY_TIMEOUT_MS} ms`))
    if (frame == null) throw new PeerUnreachableError(`peer ${peer} closed its capacity announcement empty`)
    return parseCapacityFrame(frame, peer)
  } finally {
    lane.abort()
  }
}

/**
 * Why an image of `need` bytes does not fit a peer's capacity given what this node already sent
 * its way and the peer does not hold yet (`pending`), or undefined when it fits.
 */
export function doesNotFit (cap: NodeCapacity, need: { memory: number, cache: number }, pending: { memory: number, cache: number }): string | undefined {
  if (need.memory > cap.maxMemoryBytes) return `its memory (${mib(need.memory)}) is above the peer's maximum (${mib(cap.maxMemoryBytes)})`
  if (need.cache > cap.maxCacheBytes) return `its cache (${mib(need.cache)}) is above the peer's maximum (${mib(cap.maxCacheBytes)})`
  const memory = need.memory + pending.memory
  const cache = need.cache + pending.cache
  if (memory > cap.memoryFree) return `the peer has ${mib(cap.memoryFree)} of memory free for it, it needs ${mib(memory)}`
  if (cap.sharedSpace ? memory + cache > cap.cacheFree : cache > cap.cacheFree) {
    return `the peer has ${mib(cap.cacheFree)} of disk free for it, it needs ${mib(cap.sharedSpace ? memory + cache : cache)}`
  }
  return undefined
}

