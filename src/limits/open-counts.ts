/**
 * How many of something are open now, by key (connections per address or prefix, unidentified
 * sessions per listener). A key whose count falls to zero is forgotten, so the map holds only the
 * keys that have something open.
 */
export class OpenCounts {
  private readonly counts = new Map<string, number>();

  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  add(key: string): void {
    this.counts.set(key, this.get(key) + 1);
  }

  /** One fewer open under `key`; never below zero. */
  remove(key: string): void {
    const left = this.get(key) - 1;
    if (left > 0) this.counts.set(key, left);
    else this.counts.delete(key);
  }
}
