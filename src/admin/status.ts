import type { SmartHostStatus } from '../forward/smarthost-status';
import type { ClientUsage } from '../observe/activity';
import type { SchedulerSnapshot } from '../spool/scheduler';
import type { StatusReport } from './types';

export interface StatusParts {
  hostname: string;
  version: string;
  startedAt: number;
  now: number;
  schedule: SchedulerSnapshot;
  held: number;
  dead: number;
  smarthosts: SmartHostStatus[];
  topClients: ClientUsage[];
  lastReload: StatusReport['last_reload'];
}

/** `smarthop status` in one object: assembled from what the stages already know, nothing read from disk. */
export function buildStatus(parts: StatusParts): StatusReport {
  const { schedule, now } = parts;
  return {
    hostname: parts.hostname,
    version: parts.version,
    started_at: new Date(parts.startedAt).toISOString(),
    uptime_seconds: Math.round((now - parts.startedAt) / 1000),
    queue: {
      ready: schedule.ready,
      deferred: schedule.deferred,
      active: schedule.active,
      held: parts.held,
      dead: parts.dead,
    },
    oldest:
      schedule.oldestId !== null && schedule.oldestReceivedAt !== null
        ? {
            id: schedule.oldestId,
            received_at: new Date(schedule.oldestReceivedAt).toISOString(),
            age_seconds: Math.max(0, Math.round((now - schedule.oldestReceivedAt) / 1000)),
          }
        : null,
    smarthosts: parts.smarthosts,
    top_clients: parts.topClients,
    last_reload: parts.lastReload,
  };
}
