import { RotatingEventFile } from '../src/observe/event-file';
import { prng } from './prng';

/**
 * A day of relay traffic as events.jsonl lines, for `bench --trace` and the trace tests: the same
 * fields and order as observe/observer.ts writes, in time order, rotated by size like the relay
 * rotates. Most messages go out at the first attempt; some fail over, some are deferred and retried
 * later (their events interleave with newer messages'), some bounce and cause a DSN, a few are
 * refused. Every recipient address is distinct, the worst case for a recipient glob.
 */

export interface GeneratedEvents {
  events: number;
  messages: number;
  /** A few messages of each kind, for the queries to look for. */
  samples: { deferred: Sample; bounced: Sample; middle: Sample };
  /** Recipients matching `rare-*@rare.example`, spread over the whole range. */
  rareRecipients: number;
  firstTs: number;
  lastTs: number;
}

export interface Sample {
  queueId: string;
  messageId: string;
  recipient: string;
  dsnId?: string;
}

export interface GenerateOptions {
  file: string;
  events: number;
  maxSize: number;
  keep: number;
  seed?: number;
  /** Time of the first event (ms); a message arrives every ~86 ms. Default: so that the last is about now. */
  start?: number;
}

const CLIENTS = ['erp', 'scanners', 'monitoring', 'webshop', 'crm'];
const RARE_EVERY = 20_000;

export async function generateEvents(options: GenerateOptions): Promise<GeneratedEvents> {
  const random = prng(options.seed ?? 7);
  const output = new RotatingEventFile({
    file: options.file,
    maxSize: options.maxSize,
    keep: options.keep,
    onDrop: () => {
      throw new Error('bench events dropped');
    },
    onError: (err) => {
      throw err;
    },
  });
  const later = new Map<number, Record<string, unknown>[]>();
  const schedule = (at: number, event: Record<string, unknown>) => {
    const list = later.get(at) ?? [];
    list.push(event);
    later.set(at, list);
  };
  let written = 0;
  let pending = 0;
  const write = async (event: Record<string, unknown>) => {
    output.write(event);
    written++;
    if (++pending >= 5000) {
      pending = 0;
      await output.close();
    }
  };
  // By default the history ends about now (a message every ~86 ms, ~3.4 events each), so "the last 2 hours" has mail.
  const start = options.start ?? Date.now() - Math.round(options.events * 25.5);
  let time = start;
  let lastTs = start;
  const ts = (t: number) => new Date(t).toISOString();
  const samples: Partial<GeneratedEvents['samples']> = {};
  let rare = 0;
  let message = 0;
  while (written < options.events) {
    message++;
    time += 40 + Math.floor(random() * 92);
    const id = `${base36(time)}${message.toString(16).toUpperCase().padStart(10, '0')}`;
    const client = CLIENTS[Math.floor(random() * CLIENTS.length)];
    const from = `${client}@corp.example`;
    const isRare = message % RARE_EVERY === 0;
    const to = isRare ? [`rare-${message}@rare.example`] : [`user${message}@customer${message % 997}.example`];
    if (isRare) rare++;
    if (random() < 0.15) to.push(`copy${message}@archive.example`);
    const messageId = `<${message}.${id.toLowerCase()}@${client}.corp.example>`;
    const sample = { queueId: id, messageId, recipient: to[0] };
    const kind = random();
    if (kind < 0.005) {
      await write({
        ts: ts(time),
        type: 'rejected',
        queue_id: null,
        client,
        from,
        to: to[0],
        smarthost: null,
        response: '550 5.7.1 Recipient not allowed for client',
        attempt: 0,
        reason: 'recipient_not_allowed',
        remote: '10.20.1.5',
        listener: 'smtp',
      });
      continue;
    }
    await write({
      ts: ts(time),
      type: 'received',
      queue_id: id,
      client,
      from,
      to,
      smarthost: null,
      response: null,
      attempt: 0,
      size: 10_240 + Math.floor(random() * 50_000),
      message_id: messageId,
      remote: `10.20.${message % 250}.${message % 200}`,
      listener: 'smtp',
    });
    const attempt = (t: number, host: string, outcome: string, response: string, recipients = to) => ({
      ts: ts(t),
      type: 'attempt',
      queue_id: id,
      client: null,
      from: null,
      to: recipients,
      smarthost: host,
      response,
      attempt: null,
      outcome,
      accepted: outcome === 'delivered' ? recipients.length : 0,
      relay: `${host}[203.0.113.${host === 'primary' ? 5 : 6}]:587`,
      duration_ms: 120,
    });
    const outcome = (t: number, type: string, host: string | null, response: string, n: number) =>
      to.map((address) => ({
        ts: ts(t),
        type,
        queue_id: id,
        client,
        from,
        to: address,
        smarthost: host,
        response,
        attempt: n,
      }));
    if (kind < 0.85) {
      await write(attempt(time + 150, 'primary', 'delivered', '250 2.0.0 Ok: queued as 4XyZ'));
      for (const event of outcome(time + 151, 'delivered', 'primary', '250 2.0.0 Ok: queued as 4XyZ', 1))
        await write(event);
    } else if (kind < 0.93) {
      await write(attempt(time + 30, 'primary', 'unreachable', 'connect ECONNREFUSED 203.0.113.5:587'));
      await write(attempt(time + 180, 'backup', 'delivered', '250 OK id=1q2w3e'));
      for (const event of outcome(time + 181, 'delivered', 'backup', '250 OK id=1q2w3e', 1)) await write(event);
    } else if (kind < 0.985) {
      samples.deferred ??= message > 1000 ? sample : undefined;
      await write(attempt(time + 100, 'primary', 'deferred', '451 4.7.1 Try again later'));
      for (const event of outcome(time + 101, 'deferred', 'primary', '451 4.7.1 Try again later', 1))
        await write(event);
      const retryAt = message + 350;
      schedule(retryAt, attempt(-1, 'primary', 'delivered', '250 2.0.0 Ok: queued as 9AbC'));
      for (const event of outcome(-1, 'delivered', 'primary', '250 2.0.0 Ok: queued as 9AbC', 2))
        schedule(retryAt, event);
    } else {
      const dsnId = `${base36(time + 300)}D${message.toString(16).toUpperCase().padStart(9, '0')}`;
      if (message > 1000) samples.bounced ??= { ...sample, dsnId };
      await write(attempt(time + 100, 'primary', 'failed', '550 5.1.1 No such user'));
      for (const event of outcome(time + 101, 'bounced', 'primary', '550 5.1.1 No such user', 1)) await write(event);
      await write({
        ts: ts(time + 102),
        type: 'dsn',
        queue_id: id,
        client: null,
        from: '',
        to: [from],
        smarthost: null,
        response: null,
        attempt: null,
        dsn_id: dsnId,
        recipients: to,
      });
      await write({
        ts: ts(time + 300),
        type: 'attempt',
        queue_id: dsnId,
        client: null,
        from: null,
        to: [from],
        smarthost: 'primary',
        response: '250 2.0.0 Ok',
        attempt: null,
        outcome: 'delivered',
        accepted: 1,
        relay: 'primary[203.0.113.5]:587',
        duration_ms: 80,
      });
      await write({
        ts: ts(time + 301),
        type: 'delivered',
        queue_id: dsnId,
        client,
        from: '',
        to: from,
        smarthost: 'primary',
        response: '250 2.0.0 Ok',
        attempt: 1,
        dsn_of: id,
      });
    }
    if (written > options.events / 2) samples.middle ??= sample;
    for (const event of later.get(message) ?? []) await write({ ...event, ts: ts(time + 50) });
    later.delete(message);
    lastTs = time;
  }
  await output.close();
  if (!samples.deferred || !samples.bounced || !samples.middle)
    throw new Error('too few events to have a sample of each kind');
  return {
    events: written,
    messages: message,
    samples: samples as GeneratedEvents['samples'],
    rareRecipients: rare,
    firstTs: start,
    lastTs,
  };
}

/** A queue id's time part, as spool/store.ts makes it. */
function base36(time: number): string {
  return time.toString(36).toUpperCase().padStart(9, '0');
}
