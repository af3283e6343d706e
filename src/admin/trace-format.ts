import type { Story } from '../trace/story';
import { recipientsOf, type TraceEvent } from '../trace/trace-event';
import { humanSize, table } from './format';

/** `smarthop trace` for people: one block per message, its events one line each, in local time. */

export interface TraceAnswer {
  stories: Story[];
  more: boolean;
  notes?: string[];
}

export function formatTrace(answer: TraceAnswer, now: Date = new Date()): string {
  if (answer.stories.length === 0) return `no message matches${noteLines(answer)}`;
  const blocks = answer.stories.map((story) => formatStory(story));
  const summary = `${answer.stories.length} message(s)${answer.more ? ', more match (narrow the query or raise --limit)' : ''}; times are local (UTC${utcOffset(now)})`;
  return `${blocks.join('\n\n')}\n\n${summary}${noteLines(answer)}`;
}

/** One line per message: the table for a long answer (`--brief`). */
export function formatTraceTable(answer: TraceAnswer): string {
  if (answer.stories.length === 0) return `no message matches${noteLines(answer)}`;
  const rows = answer.stories.map((story) => {
    const recipients = story.recipients.map((r) => r.address);
    const last = [...story.recipients].reverse().find((r) => r.response !== null)?.response ?? story.rejected?.response ?? '';
    return [
      story.queue_id ?? '-', localTime(story.first_at), story.state, story.received?.client ?? story.events[0]?.client ?? '-',
      `<${story.received?.from ?? story.events[0]?.from ?? ''}>`, recipients.length > 1 ? `${recipients[0]} +${recipients.length - 1}` : (recipients[0] ?? '-'), clip(last, 60),
    ];
  });
  const more = answer.more ? '\nmore match (narrow the query or raise --limit)' : '';
  return `${table(['ID', 'RECEIVED', 'STATE', 'CLIENT', 'FROM', 'TO', 'LAST RESPONSE'], rows)}${more}${noteLines(answer)}`;
}

export function formatStory(story: Story): string {
  const lines: string[] = [];
  const r = story.received;
  if (story.rejected) {
    const e = story.events[0];
    lines.push(`(refused)  rejected  ${localTime(story.first_at)}  client ${e.client ?? '?'}${e.remote ? ` [${e.remote}]` : ''}${e.listener ? ` on ${e.listener}` : ''}`);
    const envelope = [e.from !== null ? `from <${e.from}>` : null, recipientsOf(e).length > 0 ? `to <${recipientsOf(e).join('>, <')}>` : null].filter((part) => part !== null);
    lines.push(`  ${envelope.length > 0 ? `${envelope.join(' ')}: ` : ''}${story.rejected.reason ?? 'refused'} (${story.rejected.response ?? ''})`);
    return lines.join('\n');
  }
  lines.push(`${story.queue_id}  ${story.state}  ${r ? `received ${localTime(r.at)} from ${r.client ?? '?'}${r.remote ? ` [${r.remote}]` : ''}${r.listener ? ` on ${r.listener}` : ''}` : 'received before the oldest events file'}`);
  if (r) {
    lines.push(`  <${r.from ?? ''}> to <${r.to.join('>, <')}>${r.size !== null ? `, ${humanSize(r.size)}` : ''}${r.message_id ? `, Message-ID ${r.message_id}` : ''}`);
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
  switch (event.type) {
    case 'received':
      return `received   ${recipientsOf(event).length} recipient(s)${event.size !== undefined ? `, ${event.size} bytes` : ''}`;
    case 'attempt':
      return `attempt    ${prefix}${event.relay ?? event.smarthost ?? '?'}: ${event.outcome ?? '?'}${event.accepted !== undefined ? `, ${event.accepted}/${recipientsOf(event).length} accepted` : ''} (${event.response ?? ''})`;
    case 'delivered':
    case 'deferred':
    case 'bounced':
    case 'expired':
      return `${event.type.padEnd(10)} ${prefix}<${recipientsOf(event).join('>, <')}>${event.smarthost !== null ? ` via ${event.smarthost}` : ''}${event.attempt !== null ? `, attempt ${event.attempt}` : ''} (${event.response ?? ''})`;
    case 'dsn':
      return `dsn        ${event.dsn_id ?? '?'} to <${recipientsOf(event).join('>, <')}> about <${(event.recipients ?? []).join('>, <')}>`;
    default:
      return event.type;
  }
}

function noteLines(answer: TraceAnswer): string {
  return (answer.notes ?? []).map((note) => `\nnote: ${note}`).join('');
}

function clip(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ');
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`;
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

function localDay(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '?' : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function localClock(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function localTime(iso: string): string {
  return `${localDay(iso)} ${localClock(iso).slice(0, 8)}`;
}

function utcOffset(now: Date): string {
  const minutes = -now.getTimezoneOffset();
  const sign = minutes < 0 ? '-' : '+';
  return `${sign}${pad(Math.floor(Math.abs(minutes) / 60))}:${pad(Math.abs(minutes) % 60)}`;
}
