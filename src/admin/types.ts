import type { SmartHostStatus } from '../forward/smarthost-status';
import type { ReloadResult } from '../lifecycle/reload';
import type { LastReload } from '../lifecycle/reloader';
import type { ClientUsage } from '../observe/activity';
import type { MessageDetail, QueueEntry, QueueListing } from '../spool/inspect';

/** The JSON shapes of the admin API: what the server answers and what `smarthop queue|status --json` print. */

export type { ClientUsage, MessageDetail, QueueEntry, QueueListing, ReloadResult, SmartHostStatus };

export interface QueueCounts {
  ready: number;
  deferred: number;
  /** Being attempted right now (also counted in ready, as the metric does). */
  active: number;
  held: number;
  dead: number;
}

export interface StatusReport {
  hostname: string;
  version: string;
  started_at: string;
  uptime_seconds: number;
  queue: QueueCounts;
  /** The oldest message still to be delivered (held and dead ones are not waiting). */
  oldest: { id: string; received_at: string; age_seconds: number } | null;
  smarthosts: SmartHostStatus[];
  /** Busiest clients of the last hour by messages received. */
  top_clients: ClientUsage[];
  last_reload: LastReload | null;
}

export interface ActionResponse {
  id: string;
  /** queue, hold, or null once deleted. */
  folder: string | null;
}

export interface FlushResponse {
  flushed: number;
}

export interface ApiError {
  error: string;
}
