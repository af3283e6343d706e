import type { ClientConfig, PolicyConfig } from '../config/schema';
import type { BodyInspector, MessageFilter, Refusal } from '../ingress/filters';
import type { SessionPolicy } from '../ingress/ports';
import type { WindowCounters } from '../limits/window-counters';
import type { Observer } from '../observe/events';
import { AddressMatcher } from '../message/address-pattern';
import { compileHeaderPattern, type HeaderPattern } from '../message/header-pattern';
import { AttachmentScanner, type ScanFinding } from './mime-scan';
import { planRateLimits, rateLimitText, type RateDimension, type RatePlan } from './rate-limits';
import {
  applyHeaderRules,
  attachmentRefusal,
  declaredSizeRefusal,
  headerFromRefusal,
  recipientRefusal,
  senderRefusal,
  tooBig,
  type HeaderRule,
  type PolicyRules,
} from './rules';
import { SuppressionList, type SuppressionLog } from './suppression';

/**
 * The policy stage: each client's policy enforced at the earliest SMTP step that can decide.
 * MAIL (sender, declared size, message rate), RCPT (recipients, suppression, max_recipients,
 * recipient rate), DATA headers and body (header From, header rules, attachments, through
 * `filter()`), end of DATA (byte rate). The config holds patterns as plain text; they are compiled
 * here, once per config, when the engine is built. Counting goes through WindowCounters, keyed by
 * client name, so one client at its limit never touches another's count.
 */

export interface PolicyEngineDeps {
  policies: Readonly<Record<string, PolicyConfig>>;
  /** Per-client counters; kept apart from the per-address ones so a flood of addresses cannot evict them. */
  counters: WindowCounters;
  observer: Observer;
  log: SuppressionLog;
  now?: () => number;
  /** How often suppression files are checked for changes. */
  suppressionPollMs?: number;
}

interface CompiledPolicy {
  rules: PolicyRules;
  rates: Record<RateDimension, RatePlan>;
  suppression?: SuppressionList;
  /** Any content check at all: lets the DATA filter step aside for policies without one. */
  inspectsContent: boolean;
}

export class PolicyEngine implements SessionPolicy {
  private readonly compiled = new Map<string, CompiledPolicy>();
  private readonly suppressionLists = new Map<string, SuppressionList>();
  private readonly now: () => number;

  constructor(private readonly deps: PolicyEngineDeps) {
    this.now = deps.now ?? Date.now;
    for (const [name, policy] of Object.entries(deps.policies)) {
      let suppression: SuppressionList | undefined;
      if (policy.suppressed_recipients !== undefined) {
        // Policies naming the same file share one list (and one watcher).
        const file = policy.suppressed_recipients;
        suppression = this.suppressionLists.get(file) ?? new SuppressionList(file, deps.log, deps.suppressionPollMs);
        this.suppressionLists.set(file, suppression);
      }
      const rules: PolicyRules = {
        allowedSenders: matcherOf(policy.allowed_senders),
        allowedRecipients: matcherOf(policy.allowed_recipients),
        deniedRecipients: matcherOf(policy.denied_recipients),
        maxMessageSize: policy.max_message_size,
        maxRecipients: policy.max_recipients,
        headerRules: policy.header_rules.map(({ header, match, action }): HeaderRule => ({
          header,
          match: headerPattern(match),
          action,
        })),
        blockedExtensions: new Set(policy.blocked_attachments),
      };
      this.compiled.set(name, {
        rules,
        rates: planRateLimits(policy.rate_limits),
        suppression,
        inspectsContent:
          rules.allowedSenders !== undefined || rules.headerRules.length > 0 || rules.blockedExtensions.size > 0,
      });
    }
  }

  /** Loads every suppression list (an unreadable one stops the start) and starts watching them. */
  async start(): Promise<void> {
    for (const list of this.suppressionLists.values()) {
      try {
        await list.load();
      } catch (err) {
        throw new Error(`suppressed_recipients: cannot read ${list.file}: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    for (const list of this.suppressionLists.values()) list.start();
  }

  async stop(): Promise<void> {
    for (const list of this.suppressionLists.values()) {
      list.stop();
      await list.settled();
    }
  }

  /** The `limit` label values each client can produce, so the counters exist at 0 from the start. */
  rateLimitLabels(clients: readonly ClientConfig[]): { client: string; limit: string }[] {
    return clients.flatMap((client) => {
      const policy = this.policyOf(client);
      if (!policy) return [];
      return Object.values(policy.rates).flatMap((plan) =>
        plan.labels.map((limit) => ({ client: client.name, limit })),
      );
    });
  }

  maxMessageSize(client: ClientConfig): number | undefined {
    return this.policyOf(client)?.rules.maxMessageSize;
  }

  async mailFrom(client: ClientConfig, from: string, declaredSize: number | undefined): Promise<Refusal | undefined> {
    const policy = this.policyOf(client);
    if (!policy) return undefined;
    return (
      senderRefusal(policy.rules, client.name, from) ??
      declaredSizeRefusal(policy.rules, client.name, declaredSize) ??
      (await this.consume(client, policy, 'messages', 1))
    );
  }

  async rcptTo(client: ClientConfig, to: string, acceptedSoFar: number): Promise<Refusal | undefined> {
    const policy = this.policyOf(client);
    if (!policy) return undefined;
    return (
      recipientRefusal(policy.rules, client.name, to, acceptedSoFar, policy.suppression) ??
      (await this.consume(client, policy, 'recipients', 1))
    );
  }

  async dataComplete(client: ClientConfig, size: number): Promise<Refusal | undefined> {
    const policy = this.policyOf(client);
    if (!policy) return undefined;
    return this.consume(client, policy, 'bytes', size);
  }

  /** The DATA side of the policy, for IngressSessions' filter chain (self-contained; other filters run after it). */
  filter(): MessageFilter {
    return {
      headers: (headers, context) => {
        const policy = this.policyOf(context.client);
        if (!policy?.inspectsContent) return undefined;
        // The From the client wrote is what is judged, whatever a later filter makes of it.
        return (
          headerFromRefusal(policy.rules, context.client.name, context.original) ??
          applyHeaderRules(policy.rules, context.client.name, headers)
        );
      },
      body: (context): BodyInspector | undefined => {
        const policy = this.policyOf(context.client);
        if (!policy || policy.rules.blockedExtensions.size === 0) return undefined;
        const scanner = new AttachmentScanner(context.original, policy.rules.blockedExtensions);
        return {
          write: (chunk) => scanner.write(chunk),
          end: async () => scanRefusal(await scanner.end(), context.client.name),
        };
      },
    };
  }

  private policyOf(client: ClientConfig): CompiledPolicy | undefined {
    return client.policy === undefined ? undefined : this.compiled.get(client.policy);
  }

  private async consume(
    client: ClientConfig,
    policy: CompiledPolicy,
    dimension: RateDimension,
    amount: number,
  ): Promise<Refusal | undefined> {
    const plan = policy.rates[dimension];
    if (plan.limits.length === 0) return undefined;
    const tooLarge = plan.limits.findIndex((limit) => amount > limit.max);
    if (tooLarge !== -1) {
      // No window will ever have room for it: waiting would not help, so this is not a 451.
      return {
        ...tooBig(plan.limits[tooLarge].max, client.name),
        message:
          `5.3.4 Message of ${amount} bytes is over the rate limit for client ${client.name}: ` +
          `${plan.descriptions[tooLarge]}`,
      };
    }
    const result = await this.deps.counters.consume(
      `${client.name}\u0000${dimension}`,
      plan.limits,
      amount,
      this.now(),
    );
    if (result.ok) return undefined;
    this.deps.observer.emit({ type: 'rate_limited', client: client.name, limit: plan.labels[result.limit] });
    return {
      code: 451,
      message: rateLimitText(client.name, plan.descriptions[result.limit], result.retryAfterMs, result.share),
      reason: 'rate_limited',
    };
  }
}

/** The config holds patterns as written (validated by the schema); the policy compiles them once per config. */
function matcherOf(patterns: readonly string[] | undefined): AddressMatcher | undefined {
  return patterns === undefined ? undefined : AddressMatcher.of(patterns);
}

function headerPattern(source: string): HeaderPattern {
  const compiled = compileHeaderPattern(source);
  if (!compiled.ok) throw new Error(`invalid header rule pattern ${JSON.stringify(source)}: ${compiled.error}`);
  return compiled.pattern;
}

function scanRefusal(finding: ScanFinding | undefined, client: string): Refusal | undefined {
  if (!finding) return undefined;
  if (finding.kind === 'blocked') return attachmentRefusal(finding.extension, client);
  return {
    code: 550,
    message: `5.7.1 Message cannot be checked for blocked attachments (${finding.why})`,
    reason: 'content_rule',
  };
}
