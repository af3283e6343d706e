import type { QuotaStatus, SmartHost } from './smarthost';

/**
 * What the admin API, `smarthop status`, /readyz and the smart-host gauges say about one smart host.
 * It asks the host only through the SmartHost interface: `available()` today, plus `details()` for
 * the breaker and quota state (GuardedSmartHost), so those can grow without touching callers.
 */
export interface SmartHostStatus {
  name: string;
  relay: string;
  /** Eligible for delivery right now (breaker not open, quota left). */
  up: boolean;
  /** null: this host does not report a breaker. */
  breaker: 'closed' | 'open' | 'half_open' | null;
  /** Remaining quota per configured window; empty when the host has no quotas (or does not report them). */
  quota: QuotaStatus[];
}

export async function smartHostStatus(host: SmartHost, now: number): Promise<SmartHostStatus> {
  const details = (await host.details?.(now)) ?? {};
  return {
    name: host.name,
    relay: host.relay,
    up: host.available(now),
    breaker: details.breaker ?? null,
    quota: details.quota ?? [],
  };
}
