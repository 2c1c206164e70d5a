/**
 * One operation at a time per image name: create, start, remove and the start of a migration out
 * of one image wait for each other (different images do not). Without it two `start`s of one
 * stopped image each launched a workload (two writers on one image, one of them never stopped),
 * a `remove` during a `start` deleted the files under the starting workload, two `create`s of
 * one name raced on its files, and a migration could begin while a workload was being launched.
 * A promise chain per name is all this needs, so no library.
 */
export class ImageOps {
  private readonly tails = new Map<string, Promise<void>>()

  /** Runs `fn` once every earlier operation on `name` has ended (whatever their outcome). */
  async run<T> (name: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(name) ?? Promise.resolve()
    const result = before.then(fn)
    const tail = result.then(() => {}, () => {})
    this.tails.set(name, tail)
    try {
      return await result
    } finally {
      if (this.tails.get(name) === tail) this.tails.delete(name)
    }
  }
}
