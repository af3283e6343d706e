import type { ConfigResult } from '../config/load';
import type { RelayConfig } from '../config/schema';
import type { Observer, RelayEvent } from '../observe/events';
import { planReload, type ReloadResult } from './reload';

export type ReloadTrigger = 'SIGHUP' | 'api';

type ReloadEvent = Extract<RelayEvent, { type: 'config_reload' }>;

/** The outcome of the last reload, for `smarthop status`. */
export interface LastReload {
  at: string;
  ok: boolean;
  errors: string[];
  restart_required: string[];
}

/** Everything a reload replaces, built from one config. */
export interface Generation {
  readonly config: RelayConfig;
  /** Readies what must run before this generation takes traffic; a throw refuses the reload. */
  start(): Promise<void>;
  /** Lets go of what this generation holds and `successor` does not share (pools, watchers). */
  retire(successor: Generation): Promise<void>;
}

export interface ReloaderDeps<G extends Generation> {
  /** Reads the configuration again (the file `smarthop start` was given); null: every reload is refused. */
  source: (() => ConfigResult) | null;
  /** The generation running now. */
  running: () => G;
  /** Builds the next generation from the config to run; throws when it cannot (a DKIM key missing, say). */
  build: (config: RelayConfig, running: G) => G;
  /** Makes `next` the running generation in one step, and applies what follows (log level, metric labels). */
  install: (next: G) => void;
  observer: Observer;
  now?: () => Date;
}

/**
 * Re-reads the configuration (SIGHUP, POST /api/reload). An invalid one changes nothing; a valid
 * one swaps clients, policies, routes and smart hosts for the next transaction and the next
 * delivery attempt, without closing a connection or touching the queue. Reloads run one at a time;
 * every outcome is a `config_reload` event and the last one is kept for `smarthop status`.
 */
export class Reloader<G extends Generation> {
  private queue: Promise<unknown> = Promise.resolve();
  private stopping = false;
  private latest: LastReload | null = null;
  private readonly now: () => Date;

  constructor(private readonly deps: ReloaderDeps<G>) {
    this.now = deps.now ?? (() => new Date());
  }

  get last(): LastReload | null {
    return this.latest;
  }

  reload(trigger: ReloadTrigger): Promise<ReloadResult> {
    if (this.stopping) return Promise.resolve(this.refuse(trigger, ['the relay is stopping']));
    const run = this.queue
      .then(() => this.apply(trigger))
      .catch((err: Error) => this.refuse(trigger, [`reload failed: ${err.message}`]));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Refuses reloads from now on and waits for the one under way, if any. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.queue;
  }

  private async apply(trigger: ReloadTrigger): Promise<ReloadResult> {
    const result: ConfigResult = this.deps.source
      ? this.deps.source()
      : { ok: false, errors: ['this relay was not started from a config file'] };
    if (!result.ok) return this.refuse(trigger, result.errors);
    const running = this.deps.running();
    const plan = planReload(running.config, result.config);
    let next: G;
    try {
      next = this.deps.build(plan.effective, running);
    } catch (err) {
      return this.refuse(trigger, [(err as Error).message]);
    }
    try {
      await next.start();
    } catch (err) {
      // What was built for this generation alone (pools of new or changed hosts) would otherwise stay open.
      await next.retire(running);
      return this.refuse(trigger, [(err as Error).message]);
    }
    this.deps.install(next);
    await running.retire(next);
    const { changed, restartRequired } = plan;
    this.report({ trigger, result: 'success', errors: [], changed, restartRequired });
    this.latest = { at: this.now().toISOString(), ok: true, errors: [], restart_required: restartRequired };
    return { ok: true, changed, restart_required: restartRequired };
  }

  private report(outcome: Omit<ReloadEvent, 'type'>): void {
    this.deps.observer.emit({ type: 'config_reload', ...outcome });
  }

  /** Nothing was swapped: the running configuration stays, and the admin is told why. */
  private refuse(trigger: ReloadTrigger, errors: string[]): ReloadResult {
    this.report({ trigger, result: 'failure', errors, changed: [], restartRequired: [] });
    this.latest = { at: this.now().toISOString(), ok: false, errors, restart_required: [] };
    return { ok: false, errors };
  }
}
