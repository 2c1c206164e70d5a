/**
 * One operation at a time per key; different keys do not wait for each other. The node keys its
 * image operations by image name (create, start, remove and the start of a migration out: without
 * it two `start`s of one stopped image each launched a workload — two writers on one image, one
 * never stopped —, a `remove` during a `start` deleted the files under the starting workload, two
 * `create`s of one name raced on its files, a migration could begin while a workload launched),
 * and its volume operations by volume id (import, pull, remove). A promise chain per key is all
 * this needs, so no library.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<void>>()

  /** Runs `fn` once every earlier operation on `key` has ended (whatever their outcome). */
  async run<T> (key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve()
    const result = before.then(fn)
    const tail = result.then(() => {}, () => {})
    this.tails.set(key, tail)
    try {
      return await result
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key)
    }
  }
}
