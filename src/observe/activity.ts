/**
 * Who sent how much in the last hour, for `smarthop status` ("top clients"). Prometheus answers this
 * too, but an admin at a console without one should still see who is flooding the relay. Counts are
 * kept per client per minute, so memory is bounded by the configured client names × 60.
 */

const BUCKET_MS = 60_000;
const WINDOW_MS = 3_600_000;

interface Bucket {
  minute: number;
  messages: number;
  recipients: number;
}

export interface ClientUsage {
  client: string;
  messages: number;
  recipients: number;
}

export class ClientActivity {
  private readonly byClient = new Map<string, Bucket[]>();

  record(client: string, recipients: number, now: number): void {
    const minute = Math.floor(now / BUCKET_MS);
    const buckets = this.byClient.get(client) ?? [];
    let last = buckets[buckets.length - 1];
    if (!last || last.minute !== minute) {
      last = { minute, messages: 0, recipients: 0 };
      buckets.push(last);
    }
    last.messages++;
    last.recipients += recipients;
    this.byClient.set(client, prune(buckets, now));
  }

  /** The busiest clients of the last hour by messages, at most `limit`. */
  top(limit: number, now: number): ClientUsage[] {
    const usage: ClientUsage[] = [];
    for (const [client, all] of this.byClient) {
      const buckets = prune(all, now);
      if (buckets.length === 0) {
        this.byClient.delete(client);
        continue;
      }
      this.byClient.set(client, buckets);
      usage.push({ client, messages: buckets.reduce((n, b) => n + b.messages, 0), recipients: buckets.reduce((n, b) => n + b.recipients, 0) });
    }
    return usage.sort((a, b) => b.messages - a.messages || a.client.localeCompare(b.client)).slice(0, limit);
  }
}

function prune(buckets: Bucket[], now: number): Bucket[] {
  const oldest = Math.floor((now - WINDOW_MS) / BUCKET_MS);
  const first = buckets.findIndex((b) => b.minute > oldest);
  return first === -1 ? [] : first === 0 ? buckets : buckets.slice(first);
}
