import { access, constants } from 'node:fs/promises';
import type { SmartHost } from '../forward/smarthost';
import { smartHostStatus, type SmartHostStatus } from '../forward/smarthost-status';
import type { LastReload } from '../lifecycle/reloader';
import type { ClientUsage } from '../observe/activity';
import type { SchedulerSnapshot } from '../spool/scheduler';
import { buildStatus } from './status';
import type { StatusReport } from './types';

/** What /readyz answers: ready or not, and each check by name. */
export interface Readiness {
  ok: boolean;
  checks: Record<string, boolean | string>;
}

/** Where the relay's state is read from: each a getter, so a reload's new smart hosts are seen at once. */
export interface RelayStateSources {
  hostname: () => string;
  version: string;
  startedAt: number;
  schedule: () => SchedulerSnapshot;
  spool: { readonly queueDir: string; readonly heldCount: number; readonly deadCount: number };
  smarthosts: () => Iterable<SmartHost>;
  topClients: (limit: number, now: number) => ClientUsage[];
  lastReload: () => LastReload | null;
  /** False once the relay is stopping. */
  accepting: () => boolean;
  /** The queue's recovery after the start: none before the start. */
  recovery: () => RecoveryProgress | null;
}

/** How far the background recovery of the queue has come. */
export interface RecoveryProgress {
  recovered: boolean;
  failed: string | null;
  /** Queued messages checked so far. */
  checked: number;
}

/** The relay as the admin sees it: `smarthop status`, the smart hosts' state and /readyz. */
export class RelayState {
  constructor(private readonly sources: RelayStateSources) {}

  smarthosts(now = Date.now()): Promise<SmartHostStatus[]> {
    return Promise.all([...this.sources.smarthosts()].map((host) => smartHostStatus(host, now)));
  }

  async status(now = Date.now()): Promise<StatusReport> {
    const { sources } = this;
    return buildStatus({
      hostname: sources.hostname(),
      version: sources.version,
      startedAt: sources.startedAt,
      now,
      schedule: sources.schedule(),
      held: sources.spool.heldCount,
      dead: sources.spool.deadCount,
      smarthosts: await this.smarthosts(now),
      topClients: sources.topClients(10, now),
      lastReload: sources.lastReload(),
    });
  }

  /**
   * Ready while the spool can be written, some smart host's breaker is closed (a spent quota only
   * delays mail, it does not stop it), the relay is not stopping, and the whole queue is known
   * again (mail is taken and delivered during recovery, but a queued message may not be scheduled yet).
   */
  async readiness(): Promise<Readiness> {
    const spoolWritable = await access(this.sources.spool.queueDir, constants.W_OK).then(
      () => true,
      () => false,
    );
    const smarthostAvailable = [...this.sources.smarthosts()].some((host) => host.up());
    const accepting = this.sources.accepting();
    const recovery = this.sources.recovery();
    const queueRecovered: boolean | string = recovery?.recovered
      ? true
      : recovery?.failed
        ? `failed: ${recovery.failed}`
        : false;
    const checks: Record<string, boolean | string> = {
      spool_writable: spoolWritable,
      smarthost_available: smarthostAvailable,
      accepting,
      queue_recovered: queueRecovered,
    };
    if (queueRecovered === false) checks.queue_recovery = `${recovery?.checked ?? 0} queued message(s) checked so far`;
    return { ok: spoolWritable && smarthostAvailable && accepting && queueRecovered === true, checks };
  }
}
