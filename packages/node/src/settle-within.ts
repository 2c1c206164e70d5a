/** Waits for the promises to settle, at most `ms` (a stopping node must not hang on a stuck one). */
export async function settleWithin (promises: ReadonlyArray<Promise<unknown>>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    Promise.allSettled(promises),
    new Promise<void>(resolve => { timer = setTimeout(resolve, ms) })
  ]).finally(() => { clearTimeout(timer) })
}
