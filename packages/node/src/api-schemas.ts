import { z } from 'zod'
import {
  checkBlockSize, checkChunkBytes, checkGeometry, checkLanes, checkName, DEFAULT_BLOCK_SIZE, DEFAULT_PAGE_SIZE, InvalidArgumentError
} from '@shoal/core'

/**
 * The control API's request bodies and the node's config file are checked with zod schemas (no
 * unchecked casts of JSON). The rules themselves stay in core's limits.ts (one rule for the CLI,
 * the control API, the codec and the stores): a schema calls them and keeps their message.
 */

/** A field checked by one of core's rule functions (which throw with a message naming the field). */
export function rule<T> (check: (v: unknown, label: string) => T, label: string): z.ZodType<T> {
  return z.unknown().transform((v, ctx) => {
    try {
      return check(v, label)
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message })
      return z.NEVER
    }
  })
}

const name = (label: string): z.ZodType<string> => rule(checkName, label)
const positiveInt = z.number().int().min(1)
const bytes = z.number().int().min(0)

/** `POST /images` */
export const createImageBody = z.strictObject({
  name: name('image name'),
  driver: z.string().min(1).optional(),
  memorySize: bytes,
  cacheSize: bytes.default(0),
  fill: z.enum(['zero', 'random']).optional(),
  pageSize: z.number().int().optional(),
  blockSize: z.number().int().optional(),
  cacheVolume: name('volume id').optional(),
  tracker: z.enum(['scan', 'cooperative']).optional(),
  config: z.record(z.string(), z.unknown()).optional()
}).superRefine((b, ctx) => {
  try {
    // With a cache volume, the cache's sizes come from the volume (checked when it was imported).
    checkGeometry({
      memorySize: b.memorySize,
      pageSize: b.pageSize ?? DEFAULT_PAGE_SIZE,
      cacheSize: b.cacheVolume !== undefined ? 0 : b.cacheSize,
      blockSize: b.blockSize ?? DEFAULT_BLOCK_SIZE
    }, InvalidArgumentError, { memorySize: 'memorySize', pageSize: 'pageSize', cacheSize: 'cacheSize', blockSize: 'blockSize' })
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
  }
})

/** `POST /allow` */
export const allowBody = z.strictObject({ peerId: z.string() })

/** `POST /volumes` */
export const importVolumeBody = z.strictObject({
  id: name('volume id'),
  path: z.string().min(1),
  blockSize: rule(checkBlockSize, 'blockSize').optional()
})

/** `POST /volumes/pull` */
export const pullVolumeBody = z.strictObject({
  id: name('volume id'),
  from: z.array(z.string()).optional()
})

/** `POST /images/<name>/hot` */
export const hotBody = z.strictObject({ from: z.number().int().min(0), to: z.number().int().min(0) })

/** Options of a migration (`POST /migrate`, the config file's defaults). */
export const migrateOptions = z.strictObject({
  lanes: rule(checkLanes, 'lanes').optional(),
  maxRounds: positiveInt.optional(),
  downtimeTargetMs: positiveInt.optional(),
  chunkBytes: rule(checkChunkBytes, 'chunkBytes').optional(),
  streamsPerConnection: positiveInt.optional(),
  maxRate: positiveInt.optional(),
  laneRate: positiveInt.optional(),
  autoConverge: z.boolean().optional(),
  adaptivePacing: z.boolean().optional(),
  postcopyPrefetch: z.boolean().optional(),
  cacheMode: z.enum(['precopy', 'postcopy']).optional(),
  scanCpuShare: z.number().gt(0).max(1).optional()
})

/** `POST /migrate` */
export const migrateBody = migrateOptions.extend({
  image: name('image name'),
  to: z.string().min(1)
})

/** `POST /evacuate`: where the images may go, how many at once, one rate for all; the rest are each migration's options. */
export const evacuateBody = migrateOptions.omit({ maxRate: true }).extend({
  to: z.array(z.string().min(1)).min(1).optional(),
  any: z.boolean().optional(),
  maxParallel: positiveInt.max(64).optional(),
  maxRate: positiveInt.optional(),
  maxAttempts: positiveInt.max(16).optional(),
  images: z.array(name('image name')).min(1).optional()
}).refine(b => (b.to != null) !== (b.any === true), { message: 'give either to (a list of peers) or any: true' })

/**
 * Parses `value` with `schema`; on failure an {@link InvalidArgumentError} naming every key at
 * fault (`lanes: ...; unknown key "lane"`), so a user knows what to fix.
 */
export function parseWith<S extends z.ZodType> (schema: S, value: unknown, what: string): z.output<S> {
  const r = schema.safeParse(value)
  if (r.success) return r.data
  throw new InvalidArgumentError(`${what}: ${describeIssues(r.error)}`)
}

/** One line per problem, each naming its key path. */
export function describeIssues (err: z.ZodError): string {
  return err.issues.map(i => {
    const path = i.path.map(String).join('.')
    if (i.code === 'unrecognized_keys') return `unknown key${i.keys.length > 1 ? 's' : ''} ${i.keys.map(k => JSON.stringify(path === '' ? k : `${path}.${k}`)).join(', ')}`
    return path === '' ? i.message : `${path}: ${i.message}`
  }).join('; ')
}
