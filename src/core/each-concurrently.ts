/**
 * Calls `each` on every item, at most `concurrency` calls at a time, starting them in the items'
 * order; once `stop()` says so, no further call starts (those running finish). Resolves when every
 * started call has; rejects with the first call that rejects, while the others run on (a caller
 * that must stop them says so through `stop`).
 */
export async function eachConcurrently<T>(
  items: readonly T[],
  concurrency: number,
  each: (item: T, index: number) => Promise<void>,
  stop: () => boolean = () => false,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length && !stop()) {
      const i = next++;
      await each(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, concurrency), items.length) }, worker));
}
