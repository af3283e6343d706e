/**
 * Answers "may we accept another message?" against `spool.min_free_disk`. statfs is cheap but not
 * free, so one reading serves every session for a second.
 */
export class FreeSpaceGuard {
  private checkedAt = 0;
  private lastFree = Infinity;

  constructor(
    private readonly readFreeBytes: () => Promise<number>,
    private readonly minFreeBytes: number,
    private readonly cacheMs = 1000,
  ) {}

  async hasRoom(): Promise<boolean> {
    const now = Date.now();
    if (now - this.checkedAt >= this.cacheMs) {
      this.checkedAt = now;
      try {
        this.lastFree = await this.readFreeBytes();
      } catch {
        // Unable to tell is not the same as full: the write itself will fail (and answer 452) if it is.
        this.lastFree = Infinity;
      }
    }
    return this.lastFree >= this.minFreeBytes;
  }
}
