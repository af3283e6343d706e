import { createHash } from 'node:crypto';
import type { Story } from '../trace/story';
import type { TraceReport } from '../trace/trace';
import { humanAge, humanSize } from './format';
import { describeEvent } from './trace-format';
import type { StatusReport } from './types';

/**
 * The status page at `/` of the admin endpoint: one HTML document built on the server from what
 * `smarthop status` and `smarthop trace` answer. No script, no framework, nothing fetched from
 * elsewhere (the relay's network may have no internet); the browser only renders it and submits
 * the search form, a plain GET. The style sheet is inline and allowed by its digest in the
 * Content-Security-Policy, which allows nothing else.
 */

/** What the trace box searches by: the name of a `GET /api/trace` parameter. */
export const SEARCH_FIELDS = [
  ['recipient', 'recipient'],
  ['sender', 'sender'],
  ['queue_id', 'queue id'],
  ['message_id', 'Message-ID'],
  ['client', 'client'],
] as const;
export type SearchField = (typeof SEARCH_FIELDS)[number][0];

export const SEARCH_PERIODS = [
  ['1h', 'last hour'],
  ['24h', 'last 24 hours'],
  ['7d', 'last 7 days'],
  ['', 'all kept events'],
] as const;

export interface PageSearch {
  by: SearchField;
  text: string;
  since: string;
  /** The answer, or why there is none (a bad pattern, no events file). */
  result: { ok: true; report: TraceReport } | { ok: false; error: string };
}

export interface PageData {
  status: StatusReport;
  /** Newest first. */
  recentEvents: Record<string, unknown>[];
  /** Whether the relay has an events file to search. */
  traceAvailable: boolean;
  search: PageSearch | null;
  now: Date;
}

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f4f6f9}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header span{color:#c5cbd6}
main{padding:16px 24px;display:grid;gap:16px;grid-template-columns:repeat(auto-fit,minmax(420px,1fr))}
section{background:#fff;border:1px solid #d9dee7;border-radius:6px;padding:12px 16px;overflow-x:auto}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eceff4;vertical-align:top}
th{font-weight:600;color:#4a5366}td.n{text-align:right;font-variant-numeric:tabular-nums}
.counts{display:flex;gap:12px;flex-wrap:wrap}
.count{border:1px solid #d9dee7;border-radius:6px;padding:8px 14px;min-width:90px}
.count b{display:block;font-size:22px}.count.alert b{color:#b3261e}
.up{color:#1b7f3b;font-weight:600}.down{color:#b3261e;font-weight:600}
.state-delivered{color:#1b7f3b}.state-deferred,.state-queued{color:#9a6700}
.state-bounced,.state-expired,.state-rejected{color:#b3261e}
form{display:flex;gap:8px;flex-wrap:wrap;margin-bottom:12px}input[type=search]{flex:1;min-width:240px;padding:5px 8px}
select,button{padding:5px 8px}
.story{border-top:1px solid #d9dee7;padding:8px 0}.story p{margin:2px 0}
code,.mono{font-family:ui-monospace,monospace;font-size:13px}.muted{color:#6b7385}.error{color:#b3261e}
`;

const STYLE_HASH = createHash('sha256').update(STYLE).digest('base64');

/** Nothing but the inline style above; forms may only submit here; the page may not be framed. */
export const PAGE_CSP = [
  "default-src 'none'",
  `style-src 'sha256-${STYLE_HASH}'`,
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

export function renderPage(data: PageData): string {
  const { status } = data;
  const refresh = data.search === null ? '<meta http-equiv="refresh" content="30">' : '';
  const uptime = `version ${status.version}, up ${humanAge(status.uptime_seconds)} (since ${status.started_at})`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">${refresh}
<title>smarthop on ${esc(status.hostname)}</title><style>${STYLE}</style></head>
<body>
<header><h1>smarthop on ${esc(status.hostname)}</h1><span>${esc(uptime)}</span>
<span>as of ${esc(data.now.toISOString())}</span></header>
<main>
${queueSection(status)}
${smartHostSection(status)}
${clientSection(status)}
${traceSection(data)}
${eventSection(data.recentEvents)}
</main>
</body></html>
`;
}

function queueSection(status: StatusReport): string {
  const q = status.queue;
  const count = (label: string, n: number, alert = false) =>
    `<div class="count${alert && n > 0 ? ' alert' : ''}" data-count="${esc(label)}"><b>${n}</b>${esc(label)}</div>`;
  const oldest = status.oldest
    ? `oldest waiting: <code>${esc(status.oldest.id)}</code>, ${esc(humanAge(status.oldest.age_seconds))} old ` +
      `(received ${esc(status.oldest.received_at)})`
    : 'nothing waiting';
  const last = status.last_reload;
  const reload = last
    ? `<p class="${last.ok ? 'muted' : 'error'}">last reload ${last.ok ? 'ok' : 'REFUSED'} at ${esc(last.at)}` +
      `${last.ok ? '' : `: ${esc(last.errors.join('; '))}`}</p>`
    : '';
  const counts = [
    count('ready', q.ready),
    count('active', q.active),
    count('deferred', q.deferred, true),
    count('held', q.held),
    count('dead', q.dead, true),
  ];
  return `<section id="queue"><h2>Queue</h2><div class="counts">${counts.join('')}</div>
<p id="oldest">${oldest}</p>${reload}</section>`;
}

function smartHostSection(status: StatusReport): string {
  const rows = status.smarthosts.map((h) => {
    const quota =
      h.quota.length > 0 ? h.quota.map((q) => esc(`${q.remaining} ${q.unit}/${q.window}`)).join('<br>') : '-';
    const cells = [
      cell(h.name),
      `<td class="${h.up ? 'up' : 'down'}">${h.up ? 'up' : 'down'}</td>`,
      cell(h.breaker ?? '-'),
      `<td>${quota}</td>`,
      cell(h.relay, 'mono'),
    ];
    return `<tr data-smarthost="${esc(h.name)}">${cells.join('')}</tr>`;
  });
  return section('smarthosts', 'Smart hosts', tableOf(['name', 'state', 'breaker', 'quota left', 'relay'], rows));
}

function clientSection(status: StatusReport): string {
  const rows = status.top_clients.map(
    (c) =>
      `<tr data-client="${esc(c.client)}">${cell(c.client)}${cell(String(c.messages), 'n')}` +
      `${cell(String(c.recipients), 'n')}</tr>`,
  );
  const body =
    rows.length === 0
      ? '<p class="muted">no mail in the last hour</p>'
      : tableOf(['client', 'messages', 'recipients'], rows);
  return section('clients', 'Top clients (last hour)', body);
}

function traceSection(data: PageData): string {
  if (!data.traceAvailable) {
    return section(
      'trace',
      'Trace',
      '<p class="muted">Message trace reads the events file: set <code>events.file</code> in the config.</p>',
      true,
    );
  }
  const search = data.search;
  const options = (list: readonly (readonly [string, string])[], selected: string) =>
    list
      .map(
        ([value, label]) =>
          `<option value="${esc(value)}"${value === selected ? ' selected' : ''}>${esc(label)}</option>`,
      )
      .join('');
  const placeholder = 'user@example.com, *@example.com, a queue id, a Message-ID…';
  const form = [
    '<form method="get" action="/" role="search">',
    `<select name="by" aria-label="search by">${options(SEARCH_FIELDS, search?.by ?? 'recipient')}</select>`,
    `<input type="search" name="q" value="${esc(search?.text ?? '')}" placeholder="${esc(placeholder)}"` +
      ' aria-label="search for" required>',
    `<select name="since" aria-label="received">${options(SEARCH_PERIODS, search?.since ?? '24h')}</select>`,
    '<button type="submit">Trace</button></form>',
  ].join('\n');
  let results = '';
  if (search && !search.result.ok) results = `<p class="error" id="trace-error">${esc(search.result.error)}</p>`;
  if (search?.result.ok) {
    const { stories, more, notes } = search.result.report;
    const summary = `${stories.length} message(s), newest first${more ? '; more match (narrow the search)' : ''}`;
    results =
      stories.length === 0
        ? '<p id="trace-empty">No message matches.</p>'
        : `<p class="muted">${summary}</p>${stories.map(storyBlock).join('\n')}`;
    results += notes.map((note) => `<p class="muted">note: ${esc(note)}</p>`).join('');
  }
  return section('trace', 'Trace', `${form}<div id="trace-results">${results}</div>`, true);
}

function storyBlock(story: Story): string {
  const r = story.received;
  const state = `<b class="state-${story.state}">${story.state}</b>`;
  const id = `<b class="mono">${esc(story.queue_id ?? '(refused)')}</b> ${state}`;
  const head = r
    ? `<p>${id} received ${esc(r.at)} from ${esc(r.client ?? '?')}${r.remote ? ` [${esc(r.remote)}]` : ''}</p>` +
      `<p>${esc(`<${r.from ?? ''}> to <${r.to.join('>, <')}>`)}` +
      `${r.size !== null ? `, ${esc(humanSize(r.size))}` : ''}` +
      `${r.message_id ? `, Message-ID <code>${esc(r.message_id)}</code>` : ''}</p>`
    : `<p>${id} ${esc(story.first_at)}</p>`;
  const rows = story.events.map((event) => `<tr>${cell(event.ts, 'mono')}${cell(describeEvent(event, story))}</tr>`);
  const events = `<table><tbody>${rows.join('\n')}</tbody></table>`;
  return `<div class="story" data-queue-id="${esc(story.queue_id ?? '')}">${head}${events}</div>`;
}

function eventSection(events: Record<string, unknown>[]): string {
  const text = (value: unknown) =>
    value === null || value === undefined ? '' : Array.isArray(value) ? value.join(', ') : String(value);
  const rows = events.map((e) => {
    const cells = [cell(text(e.ts), 'mono'), cell(text(e.type)), cell(text(e.queue_id), 'mono'), cell(text(e.client))];
    cells.push(cell(text(e.to)), cell(text(e.smarthost)), cell(text(e.response ?? e.reason)));
    return `<tr>${cells.join('')}</tr>`;
  });
  const headers = ['time', 'event', 'queue id', 'client', 'to', 'smart host', 'response'];
  return section(
    'events',
    'Last events',
    rows.length === 0 ? '<p class="muted">none yet</p>' : tableOf(headers, rows),
    true,
  );
}

function section(id: string, title: string, body: string, wide = false): string {
  return `<section id="${id}"${wide ? ' class="wide"' : ''}><h2>${esc(title)}</h2>${body}</section>`;
}

function tableOf(headers: string[], rows: string[]): string {
  const head = headers.map((h) => `<th>${esc(h)}</th>`).join('');
  return `<table><thead><tr>${head}</tr></thead><tbody>${rows.join('\n')}</tbody></table>`;
}

function cell(text: string, className?: string): string {
  return `<td${className ? ` class="${className}"` : ''}>${esc(text)}</td>`;
}

function esc(value: string): string {
  return value.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  );
}
