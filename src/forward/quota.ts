import type { SmartHostQuotaConfig } from '../config/schema';
import type { ConsumeResult, WindowCounters, WindowLimit } from '../limits/window-counters';

/**
 * Provider quotas of one smart host (`rate_limits`), counted in the shared WindowCounters. Messages
 * and recipients are counted under two keys of the host, so one limit entry may bound both.
 */

export type QuotaUnit = 'messages' | 'recipients';

interface UnitLimits {
  limits: WindowLimit[];
  /** The `window` metric label of each limit, in the same order. */
  windows: string[];
}

export type QuotaDecision = { kind: 'admit'; recipients: number } | { kind: 'exhausted'; unit: QuotaUnit };

/**
 * Pure: given what is left in every window, may a message with `wanted` recipients go now, and to
 * how many of them? A recipient quota smaller than the message lets part of it go now (the rest
 * stays pending for another host or a later window), so a big message can never wedge the queue.
 */
export function decideQuota(
  remainingMessages: readonly number[],
  remainingRecipients: readonly number[],
  wanted: number,
): QuotaDecision {
  if (remainingMessages.some((left) => left < 1)) return { kind: 'exhausted', unit: 'messages' };
  const recipients = Math.min(wanted, ...remainingRecipients);
  if (recipients < 1) return { kind: 'exhausted', unit: 'recipients' };
  return { kind: 'admit', recipients };
}

/** `60000` → `1m`: the canonical spelling of a window, whatever unit the admin wrote it in. */
export function formatWindow(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

export type QuotaAdmission = { ok: true; recipients: number } | { ok: false; retryAt: number; detail: string };

export interface QuotaSample {
  window: string;
  unit: QuotaUnit;
  remaining: number;
}

export class SmartHostQuota {
  private readonly units: Record<QuotaUnit, UnitLimits> = {
    messages: { limits: [], windows: [] },
    recipients: { limits: [], windows: [] },
  };

  constructor(
    private readonly hostName: string,
    config: readonly SmartHostQuotaConfig[],
    private readonly counters: WindowCounters,
  ) {
    for (const entry of config) {
      for (const unit of ['messages', 'recipients'] as const) {
        const max = entry[unit];
        if (max === undefined) continue;
        this.units[unit].limits.push({ windowMs: entry.window, max });
        this.units[unit].windows.push(formatWindow(entry.window));
      }
    }
  }

  /**
   * Counts one message to `wanted` recipients (or fewer, see decideQuota) against the quota, or
   * says when the exhausted window frees. Counted before sending and never given back: a provider
   * counts what it was offered, and erring on the side of fewer is what keeps the host usable.
   */
  async admit(wanted: number, now: number): Promise<QuotaAdmission> {
    const { messages, recipients } = this.units;
    if (messages.limits.length === 0 && recipients.limits.length === 0) return { ok: true, recipients: wanted };
    const [leftMessages, leftRecipients] = await Promise.all([
      this.left('messages', now),
      this.left('recipients', now),
    ]);
    const decision = decideQuota(leftMessages, leftRecipients, wanted);
    if (decision.kind === 'exhausted') return this.exhausted(decision.unit, now);
    // Another delivery may have taken the last of a window since we looked; consume refuses atomically.
    if (messages.limits.length > 0) {
      const result = await this.counters.consume(this.key('messages'), messages.limits, 1, now);
      if (!result.ok) return this.refused('messages', result, now);
    }
    if (recipients.limits.length > 0) {
      const result = await this.counters.consume(this.key('recipients'), recipients.limits, decision.recipients, now);
      if (!result.ok) return this.refused('recipients', result, now);
    }
    return { ok: true, recipients: decision.recipients };
  }

  /** `smarthop_smarthost_quota_remaining`, one sample per configured limit. */
  async remaining(now: number): Promise<QuotaSample[]> {
    const samples: QuotaSample[] = [];
    for (const unit of ['messages', 'recipients'] as const) {
      const left = await this.left(unit, now);
      left.forEach((remaining, i) => samples.push({ window: this.units[unit].windows[i], unit, remaining }));
    }
    return samples;
  }

  private async left(unit: QuotaUnit, now: number): Promise<number[]> {
    const { limits } = this.units[unit];
    return limits.length === 0 ? [] : this.counters.remaining(this.key(unit), limits, now);
  }

  /** Asking for one more than a full window allows counts nothing and tells when that window frees. */
  private async exhausted(unit: QuotaUnit, now: number): Promise<QuotaAdmission> {
    const result = await this.counters.consume(this.key(unit), this.units[unit].limits, 1, now);
    return this.refused(unit, result, now);
  }

  private refused(unit: QuotaUnit, result: ConsumeResult, now: number): QuotaAdmission {
    // ok here means the window freed between the two looks (and one unit was counted): try again at once.
    if (result.ok)
      return { ok: false, retryAt: now + 1, detail: `quota of ${this.hostName} changed while checking it` };
    const { limits, windows } = this.units[unit];
    const retryAt = now + result.retryAfterMs;
    return {
      ok: false,
      retryAt,
      detail:
        `${this.hostName} quota exhausted (${limits[result.limit].max} ${unit} per ${windows[result.limit]}) ` +
        `until ${new Date(retryAt).toISOString()}`,
    };
  }

  private key(unit: QuotaUnit): string {
    return `smarthost:${this.hostName}:${unit}`;
  }
}
