import type { Outcome, SmtpReply } from '../outcome';
import type { HttpAnswer } from './http';

/**
 * Graph's HTTP answers as the outcomes every smart host reports, with an SMTP-style reply so the
 * DSN (its Status and Diagnostic-Code), the events and the log lines read as they do for an SMTP
 * host, and carry Graph's own error code and message. Pure: table tested.
 *
 *   202                  delivered
 *   400, 403, 404, 413   permanent (this host will not take it; the route's next host is tried once)
 *   429, 503, 504        transient, honouring Retry-After (the host is skipped until then)
 *   401                  the caller renews the token once; a second 401 is transient
 *   anything else        transient: an unknown error is a temporary one
 */

export interface GraphError {
  code: string;
  message: string;
}

/** Graph's error body `{"error":{"code","message","innerError":{…}}}`; null when the body is something else. */
export function graphError(body: Buffer): GraphError | null {
  try {
    const value = JSON.parse(body.toString('utf8')) as { error?: { code?: unknown; message?: unknown } };
    const error = value?.error;
    if (typeof error?.code !== 'string') return null;
    return { code: error.code, message: typeof error.message === 'string' ? error.message : '' };
  } catch {
    return null;
  }
}

/** One line of printable text, bounded: Graph's message goes into DSNs and log lines. */
function oneLine(text: string, max = 300): string {
  const clean = text
    .replace(/[\r\n\t]+/g, ' ')
    .replace(/[^\x20-\x7e]/g, '?')
    .replace(/ {2,}/g, ' ')
    .trim();
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}

function header(answer: HttpAnswer, name: string): string | undefined {
  const value = answer.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The longest wait a smart host may ask for: a misconfigured proxy's "Retry-After: 1 year" must not park the host. */
const MAX_RETRY_AFTER_MS = 24 * 3_600_000;

/** When Graph throttles without saying how long (it normally does), wait this long. */
export const DEFAULT_THROTTLE_MS = 30_000;

/** `Retry-After` as seconds or an HTTP-date (RFC 9110 §10.2.3) in ms from `now`; undefined if absent or unreadable. */
export function retryAfterMs(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  const ms = /^\d+$/.test(text) ? Number(text) * 1000 : Date.parse(text) - now;
  if (!Number.isFinite(ms)) return undefined;
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

/** `Microsoft Graph 403 ErrorAccessDenied: Access is denied. … (request-id …)`: what the DSN and log line quote. */
export function describeAnswer(answer: HttpAnswer): string {
  const error = graphError(answer.body);
  const requestId = header(answer, 'request-id');
  const what = error
    ? ` ${oneLine(error.code, 80)}${error.message ? `: ${oneLine(error.message)}` : ''}`
    : answer.status === 202
      ? ' Accepted'
      : '';
  return `Microsoft Graph ${answer.status}${what}${requestId ? ` (request-id ${oneLine(requestId, 80)})` : ''}`;
}

function reply(code: number, enhanced: string, answer: HttpAnswer): SmtpReply {
  return { code, text: `${code} ${enhanced} ${describeAnswer(answer)}` };
}

/** The enhanced status of a permanent refusal (RFC 3463), from the status and Graph's error code. */
function permanentReply(answer: HttpAnswer): SmtpReply {
  const code = graphError(answer.body)?.code ?? '';
  if (answer.status === 413 || /SizeExceeded|TooLarge/i.test(code)) return reply(552, '5.3.4', answer);
  if (answer.status === 403) return reply(550, '5.7.1', answer);
  if (answer.status === 404) return reply(550, '5.1.0', answer);
  if (/Recipient/i.test(code)) return reply(550, '5.1.3', answer);
  return reply(554, '5.6.0', answer);
}

/** The outcome of an answer that is not the success the request was waiting for. */
export function failedAnswerOutcome(answer: HttpAnswer, now: number): Outcome {
  const { status } = answer;
  if (status === 400 || status === 403 || status === 404 || status === 413) {
    return { kind: 'permanent', reply: permanentReply(answer) };
  }
  if (status === 429) {
    const text = reply(451, '4.4.5', answer);
    const wait = retryAfterMs(header(answer, 'retry-after'), now) ?? DEFAULT_THROTTLE_MS;
    return { kind: 'transient', cause: 'reply', reply: text, detail: text.text, retryAfterMs: wait };
  }
  if (status === 401) {
    const text = reply(451, '4.7.0', answer);
    // A token just issued and still refused: the host is unusable for now, as an SMTP host refusing AUTH is.
    return { kind: 'transient', cause: 'connect', reply: text, detail: text.text };
  }
  if (status === 502 || status === 503 || status === 504) {
    // Graph (or a gateway before it) is not there: a connection-level failure for the breaker.
    const text = reply(451, '4.3.2', answer);
    const wait = retryAfterMs(header(answer, 'retry-after'), now);
    return {
      kind: 'transient',
      cause: 'connect',
      reply: text,
      detail: text.text,
      ...(wait !== undefined ? { retryAfterMs: wait } : {}),
    };
  }
  const text = reply(451, '4.3.0', answer);
  return { kind: 'transient', cause: 'reply', reply: text, detail: text.text };
}

/** 202 from sendMail or send: Graph has the message (delivery continues in Exchange Online). */
export function acceptedOutcome(answer: HttpAnswer): Outcome {
  return { kind: 'delivered', reply: reply(250, '2.0.0', answer) };
}
