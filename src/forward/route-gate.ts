import type { RouteConfig, SmartHostConfig } from '../config/schema';
import type { DeliveryGate } from '../spool/scheduler';

/** A smart host as the gate sees it: whether it may take a delivery now, and from when it may. */
export interface GateHost {
  available(now: number): boolean;
  /** The earliest time the host may take a delivery (now or earlier: it may now). */
  availableAt(now: number): number;
}

export interface GateSource {
  config: { routes: Record<string, RouteConfig>; smarthosts: readonly Pick<SmartHostConfig, 'name'>[] };
  smarthosts: ReadonlyMap<string, GateHost>;
}

/**
 * The scheduler's question "may a message of this route be attempted now?", answered from the
 * running configuration: yes while some smart host of the route has its breaker closed (or ready for
 * its probe) and no known spent quota. A route without any host is left to the dispatcher to explain.
 */
export function routeGate(current: () => GateSource): DeliveryGate {
  const waitFor = (route: string, now: number): number | null => {
    const { config, smarthosts } = current();
    const names = (config.routes[route] ?? config.routes.default)?.smarthosts ?? [];
    let earliest = Infinity;
    for (const name of names) {
      const host = smarthosts.get(name);
      if (!host) continue;
      if (host.available(now)) return null;
      earliest = Math.min(earliest, host.availableAt(now));
    }
    return earliest === Infinity ? null : Math.max(now, earliest);
  };
  return {
    waitFor,
    anyOpen: (now) => Object.keys(current().config.routes).some((route) => waitFor(route, now) === null),
  };
}
