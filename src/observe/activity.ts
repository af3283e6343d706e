/**
 * Who sent how much in the last hour, for `smarthop status` ("top clients"). Prometheus answers this
 * too, but an admin at a console without one should still see who is flooding the relay. Counts are
 * kept per client per minute, so memory is bounded by the configured client names × 60. Minutes may
 * be recorded in any order: after a restart the relay counts the last hour again from its events
 * file while new mail is already being counted.
 */

const BUCKET_MS = 60_000;
const WINDOW_MS = 3_600_000;

interface Bucket {
  messages: number;
  recipients: number;
}

export interface ClientUsage {
  client: string;
  messages: number;
  recipients: number;
}

export class ClientActivity {
  /** client -> minute -> counts. */
  private readonly byClient = new Map<string, Map<number, Bucket>>();

  record(client: string, recipients: number, at: number, now = at): void {
    const minute = Math.floor(at / BUCKET_MS);
    if (minute <= oldestMinute(now)) return;
    let buckets = this.byClient.get(client);
    if (!buckets) {
      buckets = new Map();
      this.byClient.set(client, buckets);
    }
    const bucket = buckets.get(minute) ?? { messages: 0, recipients: 0 };
    bucket.messages++;
    bucket.recipients += recipients;
    buckets.set(minute, bucket);
    prune(buckets, now);
  }

  /** The busiest clients of the last hour by messages, at most `limit`. */
  top(limit: number, now: number): ClientUsage[] {
    const usage: ClientUsage[] = [];
    for (const [client, buckets] of this.byClient) {
      prune(buckets, now);
      if (buckets.size === 0) {
        this.byClient.delete(client);
        continue;
      }
      let messages = 0;
      let recipients = 0;
      for (const bucket of buckets.values()) {
        messages += bucket.messages;
        recipients += bucket.recipients;
      }
      usage.push({ client, messages, recipients });
    }
    return usage.sort((a, b) => b.messages - a.messages || a.client.localeCompare(b.client)).slice(0, limit);
  }
}

function oldestMinute(now: number): number {
  return Math.floor((now - WINDOW_MS) / BUCKET_MS);
}

function prune(buckets: Map<number, Bucket>, now: number): void {
  const oldest = oldestMinute(now);
  for (const minute of buckets.keys()) if (minute <= oldest) buckets.delete(minute);
}
