import { messageBytes, type MessageMeta } from '../spool/message';
import type { SpoolStore } from '../spool/store';
import { buildDsn, type FailedRecipient } from './dsn';

export interface BouncerDeps {
  store: SpoolStore;
  hostname: string;
  /** `bounce_copy_to`: also gets every DSN (envelope only, like a Bcc). */
  copyTo?: string;
  now?: () => number;
}

/**
 * Turns permanent failures into a DSN queued in the spool like any received message: from `<>`,
 * to the original envelope sender, through the original route. Written (fsync'd) before the
 * original leaves the queue, so a crash can at worst repeat a DSN, never lose one.
 */
export class Bouncer {
  private readonly now: () => number;

  constructor(private readonly deps: BouncerDeps) {
    this.now = deps.now ?? Date.now;
  }

  /**
   * Who a DSN about this message goes to: nobody at all for a DSN or any other message from `<>`
   * (no bounce loops; `bounce_copy_to` included), else the sender and the copy address.
   */
  addressees(meta: MessageMeta): string[] {
    if (meta.dsnOf !== undefined || meta.from === '') return [];
    const to: string[] = [];
    for (const address of [meta.from, this.deps.copyTo ?? '']) {
      if (address !== '' && !to.some((known) => known.toLowerCase() === address.toLowerCase())) to.push(address);
    }
    return to;
  }

  /** Queues a DSN for these failed recipients of `meta` (still in `queue/`); null when nobody is to get one. */
  async bounce(meta: MessageMeta, failures: readonly FailedRecipient[]): Promise<MessageMeta | null> {
    const to = this.addressees(meta);
    if (to.length === 0 || failures.length === 0) return null;
    const { store, hostname } = this.deps;
    const id = store.newId();
    const now = this.now();
    const body = buildDsn({
      hostname,
      originalId: meta.id,
      arrivalDate: new Date(meta.receivedAt),
      date: new Date(now),
      to: to[0],
      failures,
      originalHeaders: await store.readHeaders(meta.id, messageBytes(meta)),
      uniqueId: id,
    });
    const dsn: MessageMeta = {
      version: 2,
      id,
      receivedAt: now,
      client: meta.client,
      listener: meta.listener,
      remote: meta.remote,
      route: meta.route,
      from: '',
      recipients: to.map((address) => ({ address, status: 'pending' })),
      size: body.length,
      attempts: 0,
      nextAttemptAt: now,
      dsnOf: meta.id,
    };
    await store.commitGenerated(dsn, body);
    return dsn;
  }
}
