import type { MessageMeta } from '../spool/message';
import type { AttemptResult, Scheduler } from '../spool/scheduler';
import type { DispatchResult, InlineClaim } from './dispatcher';
import type { SmtpReply } from './outcome';

/** What the client of an inline listener is told: 250 (delivered or queued), or the smart hosts' 5xx. */
export type InlineVerdict = { ok: true } | { ok: false; code: number; message: string };

export interface InlineDeps {
  attempt: (id: string, inline: InlineClaim) => Promise<DispatchResult>;
  scheduler: Pick<Scheduler, 'adopt'>;
}

/**
 * `delivery: inline`: once a message is committed, one delivery attempt runs at once while the
 * client waits, for at most `timeoutMs`. The attempt is handed to the scheduler as active, and the
 * scheduler takes over from its result, so no second attempt can start while it runs; a crash in
 * between is the ordinary recovery of a queued message.
 */
export class InlineDelivery {
  constructor(private readonly deps: InlineDeps) {}

  deliver(meta: MessageMeta, timeoutMs: number): Promise<InlineVerdict> {
    return new Promise((resolve) => {
      // waiting → (timeout or a result that is not a refusal) → answered with 250
      // waiting → claimed (every recipient refused; the message is being removed) → answered with the 5xx
      let state: 'waiting' | 'claimed' | 'answered' = 'waiting';
      const answerQueued = () => {
        if (state === 'answered') return;
        state = 'answered';
        clearTimeout(timer);
        resolve({ ok: true });
      };
      const timer = setTimeout(answerQueued, timeoutMs);
      const claim: InlineClaim = {
        claimRejection: () => {
          if (state !== 'waiting') return false;
          state = 'claimed';
          clearTimeout(timer);
          return true;
        },
      };
      const adopted = this.deps.scheduler.adopt(
        meta.id,
        meta.receivedAt,
        async (): Promise<AttemptResult> => {
          try {
            const result = await this.deps.attempt(meta.id, claim);
            if (result.kind === 'done' && result.rejected && state === 'claimed') {
              state = 'answered';
              resolve({ ok: false, ...clientReply(result.rejected) });
            } else {
              answerQueued();
            }
            return result;
          } catch (err) {
            if (state === 'claimed') {
              // The refusal was claimed and removing the message failed part-way: it may be gone, so a
              // 250 could be a lie; a temporary refusal makes the client keep it and try again.
              state = 'answered';
              resolve({ ok: false, code: 451, message: '4.3.0 Delivery could not be completed, try again later' });
            } else {
              // Otherwise the message is still on disk (a refusal removes it last): 250 is the truth.
              answerQueued();
            }
            throw err;
          }
        },
        meta.route,
      );
      // Already being attempted (it raced an admin retry): it is queued, and that attempt carries on.
      if (!adopted) answerQueued();
    });
  }
}

/**
 * The smart host's 5xx as our reply to the client: one line, printable, and always with an enhanced
 * status code in the text as our own replies have (the provider's when it gave one).
 */
export function clientReply(reply: SmtpReply): { code: number; message: string } {
  const code = reply.code >= 500 && reply.code <= 599 ? reply.code : 554;
  const lines = reply.text
    .split(/\r?\n/)
    .map((line) => line.replace(/^\d{3}[ -]?/, '').trim())
    .filter((line) => line !== '');
  // A multi-line reply repeats its enhanced code on every line; once is enough.
  const text = lines
    .map((line, i) => (i === 0 ? line : line.replace(/^\d\.\d{1,3}\.\d{1,3}\s*/, '')))
    .join(' ')
    .replace(/[^\x20-\x7e]/g, '?')
    .slice(0, 400);
  const message = /^5\.\d{1,3}\.\d{1,3}\b/.test(text)
    ? text
    : `5.0.0 ${text === '' ? 'Rejected by the smart host' : text}`;
  return { code, message };
}
