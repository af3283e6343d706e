import type { RouteConfig } from '../../config/schema';
import type { MessageContext, MessageFilter, Refusal } from '../../ingress/filters';
import { normalizeAddress } from '../../message/address';
import { AddressMatcher } from '../../message/address-pattern';
import type { HeaderBlock } from '../../message/header-block';
import {
  ensureDate,
  ensureMessageId,
  rewriteEnvelopeFrom,
  rewriteFrom,
  stripHeaders,
  type FromRewrite,
} from './header-rewrites';

export interface ReenvelopeDeps {
  routes: Readonly<Record<string, RouteConfig>>;
  hostname: string;
  now?: () => Date;
}

interface CompiledRoute {
  strip: readonly string[];
  fromRewrite: FromRewrite | null;
  envelopeFrom: string | undefined;
}

/**
 * Re-enveloping at ingest: the route's header rewrites are applied to the header block before it is
 * written to the spool, and the envelope sender is settled, so both happen once per message and
 * every delivery attempt sends the same stored bytes. Runs after policy (which judges what the
 * client sent) and before DKIM signing (which signs what leaves).
 */
export class ReenvelopeFilter implements MessageFilter {
  private readonly routes = new Map<string, CompiledRoute>();
  private readonly now: () => Date;

  constructor(private readonly deps: ReenvelopeDeps) {
    this.now = deps.now ?? (() => new Date());
    for (const [name, route] of Object.entries(deps.routes)) {
      this.routes.set(name, {
        strip: route.strip_headers,
        fromRewrite: route.rewrite_from
          ? { allowed: keepsFrom(route.rewrite_from.unless), to: route.rewrite_from.to }
          : null,
        envelopeFrom: route.envelope_from,
      });
    }
  }

  headers(headers: HeaderBlock, context: MessageContext): Refusal | undefined {
    const route = this.routes.get(context.outgoing.route);
    stripHeaders(headers, route?.strip ?? []);
    if (route?.fromRewrite) rewriteFrom(headers, route.fromRewrite);
    ensureMessageId(headers, context.queueId, this.deps.hostname);
    ensureDate(headers, this.now());
    context.outgoing.from = rewriteEnvelopeFrom(context.outgoing.from, route?.envelopeFrom);
    return undefined;
  }
}

/**
 * `rewrite_from.unless` through the relay's one address matcher. A mailbox without an address
 * (`From: ERP System`) is never one that may stay: it is replaced whatever the patterns say.
 */
export function keepsFrom(unless: readonly string[]): (address: string) => boolean {
  const matcher = AddressMatcher.of(unless);
  return (address) => address !== '' && matcher.matches(normalizeAddress(address));
}
