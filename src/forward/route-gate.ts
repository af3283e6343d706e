import type { RouteConfig, SmartHostConfig } from '../config/schema';
import type { DeliveryGate, RouteState } from '../spool/scheduler';

/** A smart host as the gate sees it: whether it may take a delivery now, and from when it may. */
export interface GateHost {
  available(now: number): boolean;
  /** The earliest time the host may take a delivery (now or earlier: it may now). */
  availableAt(now: number): number;
  /** It may take one delivery now, as its breaker's probe (the others wait for that one's result). */
  probing(now: number): boolean;
}

export interface GateSource {
  config: { routes: Record<string, RouteConfig>; smarthosts: readonly Pick<SmartHostConfig, 'name'>[] };
  smarthosts: ReadonlyMap<string, GateHost>;
}

/**
 * The scheduler's question "may a message of this route be attempted now?", answered from the
 * running configuration: `open` while some smart host of the route has its breaker closed and no
 * known spent quota; `probe` while the best it has is a host whose cooldown is over (one message
 * goes, as the probe); else `wait` until the earliest host may take one again. A route without any
 * host is left to the dispatcher to explain.
 */
export function routeGate(current: () => GateSource): DeliveryGate {
  const check = (route: string, now: number): RouteState => {
    const { config, smarthosts } = current();
    const names = (config.routes[route] ?? config.routes.default)?.smarthosts ?? [];
    let earliest = Infinity;
    let probe = false;
    for (const name of names) {
      const host = smarthosts.get(name);
      if (!host) continue;
      if (host.available(now)) {
        if (!host.probing(now)) return { kind: 'open' };
        probe = true;
      }
      earliest = Math.min(earliest, host.availableAt(now));
    }
    if (probe) return { kind: 'probe' };
    return earliest === Infinity ? { kind: 'open' } : { kind: 'wait', until: Math.max(now, earliest) };
  };
  return {
    check,
    anyOpen: (now) => Object.keys(current().config.routes).some((route) => check(route, now).kind !== 'wait'),
  };
}
