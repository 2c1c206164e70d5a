import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, openSync, closeSync, ftruncateSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { checkName, ImageExistsError, isValidName, UnknownImageError, validateImageSpec } from '@shoal/core'
import type { HelloFrame, ImageSpec, OnDemandStats } from '@shoal/core'

/** What the node remembers about one hosted image. */
export interface ImageRecord {
  spec: ImageSpec
  /**
   * `running`: its workload runs here; `stopped`: hosted, not running; `migrating`: leaving;
   * `orphaned`: after a restart its workload process still ran but could not be taken back
   * (starting it again is refused); `in-doubt`: the node stopped after a migration's COMMIT went
   * out, so the destination may run it (kept paused, starting it needs the operator's --force).
   */
  state: 'stopped' | 'running' | 'migrating' | 'orphaned' | 'in-doubt'
  /** While `migrating`: where to and how far (a restart decides from it whether to resume). */
  migration?: { to: string, phase: 'precopy' | 'paused' | 'commit' }
  /** The driver's check of the image when it arrived here. */
  arrivalCheck?: { ok: boolean, detail: string }
  /** Peer the image came from, if it was migrated in. */
  from?: string
  /**
   * How the post-copy of its cache ended, when it arrived by post-copy: complete or not, how long
   * it took from the switchover, the blocks read on demand and their latency, bytes per source.
   */
  /**
   * While its cache still streams in after a post-copy switchover: the source, the session (the
   * source keeps its copy under it) and the addresses of the peers serving blocks, so that a
   * restarted node takes the stream up again.
   */
  postcopyPending?: { from: string, session: string, peers: Record<string, string[]> }
  postcopyResult?: { complete: boolean, ms: number, blocks: number, presentBlocks: number, onDemand?: OnDemandStats, sources: Record<string, { bytes: number, blocks: number, corrupt: number }>, error?: string }
  /** What the driver said about the running workload (run directory, pid), for adoption after a restart. */
  runtime?: Record<string, unknown>
}

/** Paths of a staging area for an incoming image. */
export interface Staging { memoryPath: string, cachePath: string, dir: string }

/**
 * Images hosted by a node: `<dataDir>/images/<name>/image.json` + `cache.img`, memory in
 * `<shmDir>/<name>.mem`. Incoming images are staged under `<dataDir>/incoming/<session>/` and
 * only renamed into place on commit, so a failed or refused migration leaves nothing behind.
 */
export class ImageStore {
  readonly imagesDir: string
  readonly incomingDir: string

  constructor (readonly dataDir: string, readonly shmDir: string) {
    this.imagesDir = join(dataDir, 'images')
    this.incomingDir = join(dataDir, 'incoming')
    mkdirSync(this.imagesDir, { recursive: true })
    mkdirSync(shmDir, { recursive: true })
    // Staging left by a crash is never a valid image: drop it.
    rmSync(this.incomingDir, { recursive: true, force: true })
    for (const f of readdirSync(shmDir)) if (f.startsWith('incoming-')) rmSync(join(shmDir, f), { force: true })
    mkdirSync(this.incomingDir, { recursive: true })
  }

  /** Paths a new image of this name gets. */
  pathsFor (name: string): { memoryPath: string, cachePath: string, dir: string } {
    checkName(name, 'image name')
    const dir = join(this.imagesDir, name)
    return { dir, memoryPath: join(this.shmDir, `${name}.mem`), cachePath: join(dir, 'cache.img') }
  }

  has (name: string): boolean {
    return isValidName(name) && existsSync(join(this.imagesDir, name, 'image.json'))
  }

  get (name: string): ImageRecord {
    if (!this.has(name)) throw new UnknownImageError(`no image named ${JSON.stringify(name)} on this node`)
    return JSON.parse(readFileSync(join(this.imagesDir, name, 'image.json'), 'utf8')) as ImageRecord
  }

  list (): ImageRecord[] {
    return readdirSync(this.imagesDir).filter(n => this.has(n)).map(n => this.get(n))
  }

  /** Writes the record atomically (temp file + rename). */
  put (rec: ImageRecord): void {
    validateImageSpec(rec.spec)
    const dir = join(this.imagesDir, rec.spec.name)
    mkdirSync(dir, { recursive: true })
    const tmp = join(dir, 'image.json.tmp')
    writeFileSync(tmp, JSON.stringify(rec, null, 2))
    renameSync(tmp, join(dir, 'image.json'))
  }

  /** Removes an image and its files. */
  remove (name: string): void {
    const { dir, memoryPath } = this.pathsFor(name)
    rmSync(memoryPath, { force: true })
    rmSync(`${memoryPath}.marks`, { force: true })
    rmSync(dir, { recursive: true, force: true })
  }

  /** Creates zero-filled (sparse) staging files for an incoming image. */
  stage (hello: HelloFrame, session: string): Staging {
    if (this.has(hello.image)) throw new ImageExistsError(`image ${hello.image} already exists on this node`)
    const dir = join(this.incomingDir, session)
    mkdirSync(dir, { recursive: true })
    const staging = { dir, memoryPath: join(this.shmDir, `incoming-${session}.mem`), cachePath: join(dir, 'cache.img') }
    sparseFile(staging.memoryPath, hello.memorySize)
    sparseFile(staging.cachePath, hello.cacheSize)
    return staging
  }

  /** Moves a verified staging area into place as image `spec.name`. */
  adopt (staging: Staging, rec: ImageRecord): void {
    if (this.has(rec.spec.name)) throw new ImageExistsError(`image ${rec.spec.name} already exists on this node`)
    const paths = this.pathsFor(rec.spec.name)
    mkdirSync(paths.dir, { recursive: true })
    renameSync(staging.memoryPath, paths.memoryPath)
    renameSync(staging.cachePath, paths.cachePath)
    rmSync(staging.dir, { recursive: true, force: true })
    this.put({ ...rec, spec: { ...rec.spec, memory: { ...rec.spec.memory, path: paths.memoryPath }, cache: { ...rec.spec.cache, path: paths.cachePath } } })
  }

  /** Deletes a staging area. */
  discard (staging: Staging): void {
    rmSync(staging.memoryPath, { force: true })
    rmSync(staging.dir, { recursive: true, force: true })
  }
}

function sparseFile (path: string, size: number): void {
  const fd = openSync(path, 'wx')
  try { ftruncateSync(fd, size) } finally { closeSync(fd) }
}
