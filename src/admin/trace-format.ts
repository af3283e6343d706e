import type { Story } from '../trace/story';
import { recipientsOf, type TraceEvent } from '../trace/trace-event';
import { clip, humanSize, pad, table } from './format';

/** `smarthop trace` for people: one block per message, its events one line each, in local time. */

export interface TraceAnswer {
  stories: Story[];
  more: boolean;
  notes?: string[];
}

const MORE = 'more match (narrow the query or raise --limit)';

export function formatTrace(answer: TraceAnswer, now: Date = new Date()): string {
  if (answer.stories.length === 0) return `no message matches${noteLines(answer)}`;
  const blocks = answer.stories.map((story) => formatStory(story));
  const count = `${answer.stories.length} message(s)${answer.more ? `, ${MORE}` : ''}`;
  return `${blocks.join('\n\n')}\n\n${count}; times are local (UTC${utcOffset(now)})${noteLines(answer)}`;
}

/** One line per message: the table for a long answer (`--brief`). */
export function formatTraceTable(answer: TraceAnswer): string {
  if (answer.stories.length === 0) return `no message matches${noteLines(answer)}`;
  const rows = answer.stories.map((story) => {
    const recipients = story.recipients.map((r) => r.address);
    const last = [...story.recipients].reverse().find((r) => r.response !== null)?.response;
    const first = story.events[0];
    return [
      story.queue_id ?? '-',
      localTime(story.first_at),
      story.state,
      story.received?.client ?? first?.client ?? '-',
      `<${story.received?.from ?? first?.from ?? ''}>`,
      recipients.length > 1 ? `${recipients[0]} +${recipients.length - 1}` : (recipients[0] ?? '-'),
      clip(last ?? story.rejected?.response ?? '', 60),
    ];
  });
  const headers = ['ID', 'RECEIVED', 'STATE', 'CLIENT', 'FROM', 'TO', 'LAST RESPONSE'];
  return `${table(headers, rows)}${answer.more ? `\n${MORE}` : ''}${noteLines(answer)}`;
}

export function formatStory(story: Story): string {
  if (story.rejected) {
    const e = story.events[0];
    const envelope = [e.from !== null ? `from <${e.from}>` : null, to(e) !== '' ? `to <${to(e)}>` : null];
    const known = envelope.filter((part) => part !== null);
    return [
      `(refused)  rejected  ${localTime(story.first_at)}  client ${e.client ?? '?'}${origin(e.remote, e.listener)}`,
      `  ${known.length > 0 ? `${known.join(' ')}: ` : ''}` +
        `${story.rejected.reason ?? 'refused'} (${story.rejected.response ?? ''})`,
    ].join('\n');
  }
  const r = story.received;
  const lines = [
    r
      ? `${story.queue_id}  ${story.state}  received ${localTime(r.at)} ` +
        `from ${r.client ?? '?'}${origin(r.remote, r.listener)}`
      : `${story.queue_id}  ${story.state}  received before the oldest events file`,
  ];
  if (r) {
    const size = r.size !== null ? `, ${humanSize(r.size)}` : '';
    lines.push(
      `  <${r.from ?? ''}> to <${r.to.join('>, <')}>${size}${r.message_id ? `, Message-ID ${r.message_id}` : ''}`,
    );
  }
  let day = r ? localDay(r.at) : '';
  for (const event of story.events) {
    const when = localDay(event.ts) === day ? localClock(event.ts) : `${localDay(event.ts)} ${localClock(event.ts)}`;
    day = localDay(event.ts);
    lines.push(`  ${when}  ${describeEvent(event, story)}`);
  }
  if (story.events_truncated) lines.push(`  … later events left out (more than ${story.events.length})`);
  return lines.join('\n');
}

/** One event of a story in a line, for the CLI and the status page. */
export function describeEvent(event: TraceEvent, story: Story): string {
  const isDsn = event.dsn_of !== undefined || (event.queue_id !== story.queue_id && event.type === 'attempt');
  const prefix = isDsn ? `DSN ${event.queue_id}: ` : '';
  const reply = `(${event.response ?? ''})`;
  switch (event.type) {
    case 'received': {
      const size = event.size !== undefined ? `, ${event.size} bytes` : '';
      return `received   ${recipientsOf(event).length} recipient(s)${size}`;
    }
    case 'attempt': {
      const accepted = event.accepted !== undefined ? `, ${event.accepted}/${recipientsOf(event).length} accepted` : '';
      const host = event.relay ?? event.smarthost ?? '?';
      return `attempt    ${prefix}${host}: ${event.outcome ?? '?'}${accepted} ${reply}`;
    }
    case 'delivered':
    case 'deferred':
    case 'bounced':
    case 'expired': {
      const via = event.smarthost !== null ? ` via ${event.smarthost}` : '';
      const attempt = event.attempt !== null ? `, attempt ${event.attempt}` : '';
      return `${event.type.padEnd(10)} ${prefix}<${to(event)}>${via}${attempt} ${reply}`;
    }
    case 'dsn':
      return `dsn        ${event.dsn_id ?? '?'} to <${to(event)}> about <${(event.recipients ?? []).join('>, <')}>`;
    default:
      return event.type;
  }
}

function to(event: TraceEvent): string {
  return recipientsOf(event).join('>, <');
}

function origin(remote: string | null | undefined, listener: string | null | undefined): string {
  return `${remote ? ` [${remote}]` : ''}${listener ? ` on ${listener}` : ''}`;
}

function noteLines(answer: TraceAnswer): string {
  return (answer.notes ?? []).map((note) => `\nnote: ${note}`).join('');
}

function localDay(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '?' : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function localClock(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function localTime(iso: string): string {
  return `${localDay(iso)} ${localClock(iso).slice(0, 8)}`;
}

function utcOffset(now: Date): string {
  const minutes = -now.getTimezoneOffset();
  const sign = minutes < 0 ? '-' : '+';
  return `${sign}${pad(Math.floor(Math.abs(minutes) / 60))}:${pad(Math.abs(minutes) % 60)}`;
}
