import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { SmtpSmartHostConfig } from '../config/schema';
import type { HeapSpace } from '../observe/metrics';
import type { FromDeliveryThread, ToDeliveryThread } from './delivery-protocol';
import type { Outcome } from './outcome';
import type { Envelope, MessageBody, SmartHostTransport } from './smarthost';
import { loadCa } from './smarthost-ca';

/** A scrape must not hang on a thread that is busy or dying: no answer by then reads as no figures. */
const HEAP_QUERY_TIMEOUT_MS = 1_000;

/**
 * Runs every smart host's connections on one worker thread. The event loop stays the only place
 * that decides anything about a message (spool state, breaker, quota, bounces); the thread only
 * turns "send this queue file to that host" into an outcome per recipient. Nothing durable lives
 * in the thread: if it dies, the sends under way come back as temporary failures (the messages
 * stay queued and are retried) and the next send starts a fresh thread.
 */
export class DeliveryThread {
  private worker: Worker | null = null;
  private readonly openHosts = new Map<number, { config: SmtpSmartHostConfig; ca: Buffer | undefined }>();
  private readonly pending = new Map<
    number,
    { recipients: string[]; resolve: (outcomes: Map<string, Outcome>) => void }
  >();
  private readonly heapQueries = new Map<number, (spaces: HeapSpace[]) => void>();
  private nextHost = 1;
  private nextRequest = 1;
  private stopped = false;

  private readonly script: string;

  constructor(
    private readonly heloName: string,
    private readonly logger: Logger,
    options: { script?: string } = {},
  ) {
    this.script = options.script ?? workerScript();
  }

  /** A transport for one configured smart host whose connections live in the thread. */
  transport(config: SmtpSmartHostConfig): SmartHostTransport {
    const ca = loadCa(config);
    const host = this.nextHost++;
    this.openHosts.set(host, { config, ca });
    this.post({ type: 'open', host, config, heloName: this.heloName, ca });
    return {
      name: config.name,
      relay: `${config.name}[${config.host}]:${config.port}`,
      send: (envelope, body) => this.send(host, envelope, body),
      close: () => {
        if (!this.openHosts.delete(host)) return;
        this.post({ type: 'close', host });
      },
    };
  }

  /** Starts the thread now rather than at the first delivery, so a broken install fails at start. */
  start(): void {
    this.ensureWorker();
  }

  /** Ends the thread; call once no send is under way (after the scheduler has stopped). */
  async stop(): Promise<void> {
    this.stopped = true;
    const worker = this.worker;
    this.worker = null;
    if (worker) await worker.terminate();
    this.failPending('the relay is stopping');
    this.answerHeapQueries();
  }

  /**
   * The thread's V8 heap, space by space, for /metrics: prom-client's own heap metrics see only the
   * event loop's isolate. Empty when no thread runs or it does not answer within a second.
   */
  heapSpaces(): Promise<HeapSpace[]> {
    const worker = this.worker;
    if (!worker || this.stopped) return Promise.resolve([]);
    return new Promise((resolve) => {
      const request = this.nextRequest++;
      const timer = setTimeout(() => this.answerHeapQuery(request, []), HEAP_QUERY_TIMEOUT_MS);
      timer.unref();
      this.heapQueries.set(request, (spaces) => {
        clearTimeout(timer);
        resolve(spaces);
      });
      worker.postMessage({ type: 'heap', request } satisfies ToDeliveryThread);
    });
  }

  /** The thread is gone: every query still waiting gets no figures. */
  private answerHeapQueries(): void {
    for (const request of [...this.heapQueries.keys()]) this.answerHeapQuery(request, []);
  }

  private answerHeapQuery(request: number, spaces: HeapSpace[]): void {
    const answer = this.heapQueries.get(request);
    this.heapQueries.delete(request);
    answer?.(spaces);
  }

  private send(host: number, envelope: Envelope, body: MessageBody): Promise<Map<string, Outcome>> {
    return new Promise((resolve) => {
      const request = this.nextRequest++;
      this.pending.set(request, { recipients: envelope.to, resolve });
      // Referenced only while a send waits on it, so an idle thread never keeps a stopping process alive.
      if (this.pending.size === 1) this.worker?.ref();
      this.post({ type: 'send', request, host, envelope, body });
    });
  }

  private post(message: ToDeliveryThread): void {
    if (this.stopped) {
      if (message.type === 'send')
        this.settle(message.request, failedOutcomes(message.envelope.to, 'the relay is stopping'));
      return;
    }
    // Nothing to close in a thread that is not running; and a new thread is told every open host anyway.
    if (!this.worker && message.type !== 'send') return;
    let worker: Worker;
    try {
      worker = this.ensureWorker();
    } catch (err) {
      this.logger.error({ err }, `delivery thread could not start: ${(err as Error).message}`);
      if (message.type === 'send')
        this.settle(
          message.request,
          failedOutcomes(message.envelope.to, `delivery thread could not start: ${(err as Error).message}`),
        );
      return;
    }
    worker.postMessage(message);
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    // Its young generation is sized like the event loop's, by the launch flag (lifecycle/launch-settings.ts).
    const worker = new Worker(this.script, { name: 'smarthop-delivery' });
    this.worker = worker;
    worker.on('message', (message: FromDeliveryThread) => {
      if (message.type === 'sent') this.settle(message.request, new Map(message.outcomes));
      else if (message.type === 'heap') this.answerHeapQuery(message.request, message.spaces);
      else {
        const entry = this.pending.get(message.request);
        this.settle(message.request, failedOutcomes(entry?.recipients ?? [], `delivery thread: ${message.message}`));
      }
    });
    worker.on('error', (err) =>
      this.logger.error(
        { err },
        `delivery thread failed: ${err.message}; sends under way are deferred, the next send starts a new thread`,
      ),
    );
    worker.on('exit', (code) => {
      if (this.worker !== worker) return;
      this.worker = null;
      this.failPending(`delivery thread exited with code ${code}`);
      this.answerHeapQueries();
    });
    // A new thread (the first, or one replacing a dead one) needs every smart host still in use.
    for (const [host, { config, ca }] of this.openHosts)
      worker.postMessage({ type: 'open', host, config, heloName: this.heloName, ca } satisfies ToDeliveryThread);
    if (this.pending.size === 0) worker.unref();
    return worker;
  }

  private settle(request: number, outcomes: Map<string, Outcome>): void {
    const entry = this.pending.get(request);
    if (!entry) return;
    this.pending.delete(request);
    if (this.pending.size === 0) this.worker?.unref();
    entry.resolve(outcomes);
  }

  private failPending(reason: string): void {
    for (const [request, entry] of [...this.pending]) this.settle(request, failedOutcomes(entry.recipients, reason));
  }
}

/** Not the smart host's fault, so not a connection failure: the breaker ignores it, the message is deferred. */
function failedOutcomes(recipients: readonly string[], detail: string): Map<string, Outcome> {
  return new Map(
    recipients.map((address): [string, Outcome] => [address, { kind: 'transient', cause: 'reply', detail }]),
  );
}

/**
 * The compiled worker beside this module. Under jest this module runs from its TypeScript source,
 * and a worker thread cannot load TypeScript, so the build of the same file is used (jest's
 * globalSetup, test/setup/global-setup.ts, rebuilds dist/ first when it is older than the source).
 */
function workerScript(): string {
  const beside = path.join(__dirname, 'delivery-worker.js');
  if (existsSync(beside)) return beside;
  const built = path.resolve(__dirname, '../../dist/src/forward/delivery-worker.js');
  if (existsSync(built)) return built;
  throw new Error(`delivery thread: neither ${beside} nor ${built} exists; run npm run build`);
}
