import { createHmac } from 'node:crypto';
import type { WebhookConfig } from '../config/schema';
import type { EventOutput } from './event-file';

export const SIGNATURE_HEADER = 'x-smarthop-signature';

/** `sha256=<hex>` over the exact body bytes, as GitHub signs its webhooks. */
export function signBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export interface WebhookDeps {
  onDrop: (count: number, why: string) => void;
  /** A failed attempt, for a debug line; never carries the secret. */
  onFailure: (attempt: number, why: string) => void;
}

/**
 * Posts each outcome event, one JSON object per request, HMAC-SHA256 signed. Events wait in a
 * bounded queue and go out one at a time in order; a failed post is retried with exponential backoff
 * up to `max_attempts`. Delivery never waits on it: when the queue is full the oldest waiting event
 * is dropped and counted.
 */
export class WebhookOutput implements EventOutput {
  private readonly queue: string[] = [];
  private running: Promise<void> | null = null;
  private readonly stop = new AbortController();

  constructor(
    private readonly config: WebhookConfig,
    private readonly deps: WebhookDeps,
  ) {}

  write(event: Record<string, unknown>): void {
    if (this.stop.signal.aborted) return;
    if (this.queue.length >= this.config.max_queue) {
      this.queue.shift();
      this.deps.onDrop(1, `queue full (${this.config.max_queue} events waiting)`);
    }
    this.queue.push(JSON.stringify(event));
    this.running ??= this.run().finally(() => {
      this.running = null;
    });
  }

  /** Gives what is queued until `graceMs` to go out, then abandons the rest (they are counted as dropped). */
  async close(graceMs = 2000): Promise<void> {
    const running = this.running;
    if (running) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([running, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
    }
    this.stop.abort();
    await this.running;
    if (this.queue.length > 0) this.deps.onDrop(this.queue.splice(0).length, 'relay stopping');
  }

  private async run(): Promise<void> {
    while (this.queue.length > 0 && !this.stop.signal.aborted) {
      const body = this.queue.shift() as string;
      const delivered = await this.deliver(body);
      if (!delivered && !this.stop.signal.aborted)
        this.deps.onDrop(1, `gave up after ${this.config.max_attempts} attempts`);
      if (!delivered && this.stop.signal.aborted) this.queue.unshift(body);
    }
  }

  private async deliver(body: string): Promise<boolean> {
    const { retry, max_attempts: maxAttempts } = this.config;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const why = await this.post(body);
      if (why === null) return true;
      this.deps.onFailure(attempt, why);
      if (attempt === maxAttempts || this.stop.signal.aborted) break;
      await sleep(Math.min(retry.max, retry.initial * 2 ** (attempt - 1)), this.stop.signal);
      if (this.stop.signal.aborted) break;
    }
    return false;
  }

  /** null when the receiver took it (2xx), else why not. */
  private async post(body: string): Promise<string | null> {
    try {
      const response = await fetch(this.config.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'smarthop',
          [SIGNATURE_HEADER]: signBody(this.config.secret, body),
        },
        body,
        signal: AbortSignal.any([AbortSignal.timeout(this.config.timeout), this.stop.signal]),
      });
      await response.body?.cancel().catch(() => undefined);
      return response.ok ? null : `HTTP ${response.status}`;
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      return cause ?? (err as Error).name ?? 'error';
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    timer.unref();
    function done() {
      signal.removeEventListener('abort', done);
      clearTimeout(timer);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
