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
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eceff4;vertical-align:top}
th{font-weight:600;color:#4a5366}td.n{text-align:right;font-variant-numeric:tabular-nums}
.counts{display:flex;gap:12px;flex-wrap:wrap}.count{border:1px solid #d9dee7;border-radius:6px;padding:8px 14px;min-width:90px}
.count b{display:block;font-size:22px}.count.alert b{color:#b3261e}
.up{color:#1b7f3b;font-weight:600}.down{color:#b3261e;font-weight:600}
.state-delivered{color:#1b7f3b}.state-bounced,.state-expired,.state-rejected{color:#b3261e}.state-deferred,.state-queued{color:#9a6700}
form{display:flex;gap:8px;flex-wrap:wrap;margin-bottom:12px}input[type=search]{flex:1;min-width:240px;padding:5px 8px}
select,button{padding:5px 8px}
.story{border-top:1px solid #d9dee7;padding:8px 0}.story p{margin:2px 0}
code,.mono{font-family:ui-monospace,monospace;font-size:13px}.muted{color:#6b7385}.error{color:#b3261e}
`;

const STYLE_HASH = createHash('sha256').update(STYLE).digest('base64');

/** Nothing but the inline style above; forms may only submit here; the page may not be framed. */
export const PAGE_CSP = `default-src 'none'; style-src 'sha256-${STYLE_HASH}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`;

export function renderPage(data: PageData): string {
  const { status } = data;
  const refresh = data.search === null ? '<meta http-equiv="refresh" content="30">' : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">${refresh}
<title>smarthop on ${esc(status.hostname)}</title><style>${STYLE}</style></head>
<body>
<header><h1>smarthop on ${esc(status.hostname)}</h1><span>version ${esc(status.version)}, up ${esc(humanAge(status.uptime_seconds))} (since ${esc(status.started_at)})</span>
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
  const count = (label: string, n: number, alert = false) => `<div class="count${alert && n > 0 ? ' alert' : ''}" data-count="${esc(label)}"><b>${n}</b>${esc(label)}</div>`;
  const oldest = status.oldest
    ? `oldest waiting: <code>${esc(status.oldest.id)}</code>, ${esc(humanAge(status.oldest.age_seconds))} old (received ${esc(status.oldest.received_at)})`
    : 'nothing waiting';
  const reload = status.last_reload
    ? `<p class="${status.last_reload.ok ? 'muted' : 'error'}">last reload ${status.last_reload.ok ? 'ok' : 'REFUSED'} at ${esc(status.last_reload.at)}${status.last_reload.ok ? '' : `: ${esc(status.last_reload.errors.join('; '))}`}</p>`
    : '';
  return `<section id="queue"><h2>Queue</h2><div class="counts">${count('ready', q.ready)}${count('active', q.active)}${count('deferred', q.deferred, true)}${count('held', q.held)}${count('dead', q.dead, true)}</div>
<p id="oldest">${oldest}</p>${reload}</section>`;
}

function smartHostSection(status: StatusReport): string {
  const rows = status.smarthosts.map((h) => `<tr data-smarthost="${esc(h.name)}"><td>${esc(h.name)}</td><td class="${h.up ? 'up' : 'down'}">${h.up ? 'up' : 'down'}</td>`
    + `<td>${esc(h.breaker ?? '-')}</td><td>${h.quota.length > 0 ? h.quota.map((q) => esc(`${q.remaining} ${q.unit}/${q.window}`)).join('<br>') : '-'}</td><td class="mono">${esc(h.relay)}</td></tr>`);
  return `<section id="smarthosts"><h2>Smart hosts</h2><table><thead><tr><th>name</th><th>state</th><th>breaker</th><th>quota left</th><th>relay</th></tr></thead>
<tbody>${rows.join('\n')}</tbody></table></section>`;
}

function clientSection(status: StatusReport): string {
  const rows = status.top_clients.map((c) => `<tr data-client="${esc(c.client)}"><td>${esc(c.client)}</td><td class="n">${c.messages}</td><td class="n">${c.recipients}</td></tr>`);
  return `<section id="clients"><h2>Top clients (last hour)</h2>${rows.length === 0 ? '<p class="muted">no mail in the last hour</p>'
    : `<table><thead><tr><th>client</th><th>messages</th><th>recipients</th></tr></thead><tbody>${rows.join('\n')}</tbody></table>`}</section>`;
}

function traceSection(data: PageData): string {
  if (!data.traceAvailable) {
    return '<section id="trace" class="wide"><h2>Trace</h2><p class="muted">Message trace reads the events file: set <code>events.file</code> in the config.</p></section>';
  }
  const search = data.search;
  const by = search?.by ?? 'recipient';
  const since = search?.since ?? '24h';
  const options = (list: readonly (readonly [string, string])[], selected: string) =>
    list.map(([value, label]) => `<option value="${esc(value)}"${value === selected ? ' selected' : ''}>${esc(label)}</option>`).join('');
  const form = `<form method="get" action="/" role="search"><select name="by" aria-label="search by">${options(SEARCH_FIELDS, by)}</select>
<input type="search" name="q" value="${esc(search?.text ?? '')}" placeholder="user@example.com, *@example.com, a queue id, a Message-ID…" aria-label="search for" required>
<select name="since" aria-label="received">${options(SEARCH_PERIODS, since)}</select><button type="submit">Trace</button></form>`;
  let results = '';
  if (search && !search.result.ok) results = `<p class="error" id="trace-error">${esc(search.result.error)}</p>`;
  if (search?.result.ok) {
    const { stories, more, notes } = search.result.report;
    results = stories.length === 0
      ? '<p id="trace-empty">No message matches.</p>'
      : `<p class="muted">${stories.length} message(s), newest first${more ? '; more match (narrow the search)' : ''}</p>${stories.map(storyBlock).join('\n')}`;
    results += notes.map((note) => `<p class="muted">note: ${esc(note)}</p>`).join('');
  }
  return `<section id="trace" class="wide"><h2>Trace</h2>${form}<div id="trace-results">${results}</div></section>`;
}

function storyBlock(story: Story): string {
  const r = story.received;
  const head = r
    ? `<p><b class="mono">${esc(story.queue_id ?? '')}</b> <b class="state-${story.state}">${story.state}</b> received ${esc(r.at)} from ${esc(r.client ?? '?')}${r.remote ? ` [${esc(r.remote)}]` : ''}</p>
<p>&lt;${esc(r.from ?? '')}&gt; to &lt;${r.to.map(esc).join('&gt;, &lt;')}&gt;${r.size !== null ? `, ${esc(humanSize(r.size))}` : ''}${r.message_id ? `, Message-ID <code>${esc(r.message_id)}</code>` : ''}</p>`
    : `<p><b class="mono">${esc(story.queue_id ?? '(refused)')}</b> <b class="state-${story.state}">${story.state}</b> ${esc(story.first_at)}</p>`;
  const rows = story.events.map((event) => `<tr><td class="mono">${esc(event.ts)}</td><td>${esc(describeEvent(event, story))}</td></tr>`);
  return `<div class="story" data-queue-id="${esc(story.queue_id ?? '')}">${head}<table><tbody>${rows.join('\n')}</tbody></table></div>`;
}

function eventSection(events: Record<string, unknown>[]): string {
  const text = (value: unknown) => (value === null || value === undefined ? '' : Array.isArray(value) ? value.join(', ') : String(value));
  const rows = events.map((e) => `<tr><td class="mono">${esc(text(e.ts))}</td><td>${esc(text(e.type))}</td><td class="mono">${esc(text(e.queue_id))}</td>`
    + `<td>${esc(text(e.client))}</td><td>${esc(text(e.to))}</td><td>${esc(text(e.smarthost))}</td><td>${esc(text(e.response ?? e.reason))}</td></tr>`);
  return `<section id="events" class="wide"><h2>Last events</h2>${rows.length === 0 ? '<p class="muted">none yet</p>'
    : `<table><thead><tr><th>time</th><th>event</th><th>queue id</th><th>client</th><th>to</th><th>smart host</th><th>response</th></tr></thead><tbody>${rows.join('\n')}</tbody></table>`}</section>`;
}

function esc(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}
