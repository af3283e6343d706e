import { type Stats, unwatchFile, watchFile } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { normalizeAddress, normalizeDomain, type NormalizedAddress } from './address';

/**
 * A suppression list: one address (`user@example.com`) or domain (`example.com`, `@example.com`)
 * per line, `#` comments and blank lines ignored. Lookups are exact on the normalised forms, so a
 * list of 100,000 entries costs two Set lookups per recipient.
 */
export interface SuppressionEntries {
  addresses: ReadonlySet<string>;
  domains: ReadonlySet<string>;
}

export function parseSuppressionList(text: string): SuppressionEntries {
  const addresses = new Set<string>();
  const domains = new Set<string>();
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.replace(/#.*$/, '').trim();
    if (line === '') continue;
    if (line.startsWith('@')) domains.add(normalizeDomain(line.slice(1)));
    else if (line.includes('@')) addresses.add(normalizeAddress(line).address);
    else domains.add(normalizeDomain(line));
  }
  return { addresses, domains };
}

export function isSuppressed(entries: SuppressionEntries, address: NormalizedAddress): boolean {
  return entries.addresses.has(address.address) || (address.domain !== '' && entries.domains.has(address.domain));
}

export interface SuppressionLog {
  info(message: string): void;
  warn(message: string): void;
}

/**
 * The list behind one file, reloaded when the file changes. It polls the path's stat rather than
 * watching the inode (fs.watch): editors and deploy tools replace the file by rename, which an
 * inode watch never sees, and a file that is briefly missing or unreadable keeps the last good
 * list (a suppression list must never silently become empty because of a half-finished deploy).
 */
export class SuppressionList {
  private entries: SuppressionEntries = { addresses: new Set(), domains: new Set() };
  private watching = false;
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;

  constructor(
    readonly file: string,
    private readonly log: SuppressionLog,
    private readonly pollMs = 1000,
  ) {}

  /** The first load: an unreadable file here is an error the relay refuses to start with. */
  async load(): Promise<void> {
    this.entries = parseSuppressionList(await readFile(this.file, 'utf8'));
    this.log.info(`suppression list ${this.file}: ${this.size} entries`);
  }

  start(): void {
    if (this.watching) return;
    this.watching = true;
    // persistent: false — a poller must never be what keeps the process alive.
    watchFile(this.file, { interval: this.pollMs, persistent: false }, this.onChange);
  }

  stop(): void {
    if (!this.watching) return;
    this.watching = false;
    unwatchFile(this.file, this.onChange);
  }

  has(address: NormalizedAddress): boolean {
    return isSuppressed(this.entries, address);
  }

  get size(): number {
    return this.entries.addresses.size + this.entries.domains.size;
  }

  /** Resolves once any reload under way has finished (tests, and an orderly stop). */
  async settled(): Promise<void> {
    while (this.reloading) await this.reloading;
  }

  private readonly onChange = (current: Stats, previous: Stats): void => {
    if (current.mtimeMs === previous.mtimeMs && current.size === previous.size && current.ino === previous.ino) return;
    if (current.nlink === 0 && current.mtimeMs === 0) {
      this.log.warn(`suppression list ${this.file} is missing; keeping the last ${this.size} entries until it is back`);
      return;
    }
    this.reload();
  };

  private reload(): void {
    if (this.reloading) {
      this.reloadAgain = true;
      return;
    }
    this.reloading = (async () => {
      do {
        this.reloadAgain = false;
        try {
          this.entries = parseSuppressionList(await readFile(this.file, 'utf8'));
          this.log.info(`suppression list ${this.file} reloaded: ${this.size} entries`);
        } catch (err) {
          this.log.warn(`suppression list ${this.file} could not be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); keeping the last ${this.size} entries`);
        }
      } while (this.reloadAgain);
      this.reloading = null;
    })();
  }
}
