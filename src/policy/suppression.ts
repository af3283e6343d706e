import { type Stats, unwatchFile, watchFile } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { NormalizedAddress } from '../message/address';
import { AddressMatcher } from '../message/address-pattern';

/**
 * A suppression list: one address (`user@example.com`) or domain (`example.com`, `@example.com`)
 * per line, `#` comments and blank lines ignored. Entries go through the relay's one address matcher
 * in literal mode (a `*` in a list is part of an address, not a wildcard), so lookups are exact on
 * the normalised forms: a list of 100,000 entries costs two Set lookups per recipient. A line that
 * cannot be an address or a domain (spaces inside, an empty label) could never match a recipient
 * and is counted in `skipped`.
 */
export interface SuppressionEntries {
  matcher: AddressMatcher;
  size: number;
  skipped: number;
}

export function parseSuppressionList(text: string): SuppressionEntries {
  const lines: string[] = [];
  for (const rawLine of text.split(/\r?\n/)) {
    const hash = rawLine.indexOf('#');
    const line = (hash === -1 ? rawLine : rawLine.slice(0, hash)).trim();
    if (line !== '') lines.push(line);
  }
  let compiled = AddressMatcher.compile(lines, { literal: true });
  let skipped = 0;
  if (!compiled.ok) {
    const bad = new Set(compiled.errors.map((error) => error.index));
    skipped = bad.size;
    compiled = AddressMatcher.compile(
      lines.filter((_, index) => !bad.has(index)),
      { literal: true },
    );
  }
  if (!compiled.ok) throw new Error(`suppression list: ${compiled.errors[0].message}`);
  return { matcher: compiled.matcher, size: compiled.matcher.size, skipped };
}

export function isSuppressed(entries: SuppressionEntries, address: NormalizedAddress): boolean {
  return entries.matcher.matches(address);
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
  private entries: SuppressionEntries = parseSuppressionList('');
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
    this.log.info(`suppression list ${this.file}: ${this.size} entries${this.skippedNote()}`);
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
    return this.entries.size;
  }

  /** Resolves once any reload under way has finished (tests, and an orderly stop). */
  async settled(): Promise<void> {
    while (this.reloading) await this.reloading;
  }

  private skippedNote(): string {
    return this.entries.skipped === 0
      ? ''
      : ` (${this.entries.skipped} lines skipped: neither an address nor a domain)`;
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
          this.log.info(`suppression list ${this.file} reloaded: ${this.size} entries${this.skippedNote()}`);
        } catch (err) {
          const cause = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
          this.log.warn(
            `suppression list ${this.file} could not be read (${cause}); keeping the last ${this.size} entries`,
          );
        }
      } while (this.reloadAgain);
      this.reloading = null;
    })();
  }
}
