/**
 * A Map that forgets its oldest entries past `maxEntries`, and with `weigh` past `maxWeight` in
 * total: the spool store's memory of the messages it just committed. Each entry is read once or
 * dropped, so the oldest is also the least recently used one; what an LRU adds is not needed.
 *
 * Not lru-cache: these maps empty and refill with every message (an entry lives from a commit to
 * the first attempt a few milliseconds later), and lru-cache clears its slot arrays, all `max` of
 * them, whenever its last entry is deleted.
 */
export class BoundedMap<K, V> {
  private readonly entries = new Map<K, V>();
  private weight = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly limit?: { maxWeight: number; weigh: (value: V) => number },
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: K): V | undefined {
    return this.entries.get(key);
  }

  set(key: K, value: V): void {
    this.delete(key);
    this.entries.set(key, value);
    this.weight += this.weightOf(value);
    const maxWeight = this.limit?.maxWeight ?? Infinity;
    for (const [oldest] of this.entries) {
      if (this.entries.size <= this.maxEntries && this.weight <= maxWeight) break;
      this.delete(oldest);
    }
  }

  /** Whether there was an entry to delete. */
  delete(key: K): boolean {
    const value = this.entries.get(key);
    if (value === undefined) return false;
    this.entries.delete(key);
    this.weight -= this.weightOf(value);
    return true;
  }

  private weightOf(value: V): number {
    return this.limit?.weigh(value) ?? 0;
  }
}
