import type { MessageDetail, QueueEntry, QueueListing, SmartHostStatus, StatusReport } from './types';

/** Human output of the admin commands: aligned columns, short ages and sizes. `--json` bypasses all of it. */

export function table(headers: string[], rows: string[][], rightAligned: number[] = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) =>
        rightAligned.includes(i) ? cell.padStart(widths[i]) : i === cells.length - 1 ? cell : cell.padEnd(widths[i]),
      )
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function humanAge(seconds: number): string {
  if (seconds < 60) return `${Math.max(0, Math.floor(seconds))}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h${pad(Math.floor((seconds % 3600) / 60))}m`;
  return `${Math.floor(seconds / 86_400)}d${pad(Math.floor((seconds % 86_400) / 3600))}h`;
}

export function humanSize(bytes: number): string {
  if (bytes < 1024) return `${bytes}`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)}K`;
  return `${(bytes / 1024 / 1024).toFixed(1)}M`;
}

export function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

export function clip(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ');
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`;
}

function stateLabel(entry: QueueEntry): string {
  return entry.active ? 'active' : entry.state;
}

const LISTING_HEADERS = ['ID', 'STATE', 'AGE', 'SIZE', 'TRIES', 'CLIENT', 'FROM', 'RECIPIENTS', 'LAST RESPONSE'];
const LISTING_RIGHT_ALIGNED = [2, 3, 4];

function listingRow(m: QueueEntry): string[] {
  const pending = m.recipients.filter((r) => r.status === 'pending');
  const shown = pending.length > 0 ? pending : m.recipients;
  const recipients = shown.length > 1 ? `${shown[0].address} +${shown.length - 1}` : (shown[0]?.address ?? '');
  return [
    m.id,
    stateLabel(m),
    humanAge(m.age_seconds),
    humanSize(m.size),
    String(m.attempts),
    m.client,
    `<${m.from}>`,
    recipients,
    clip(m.dead?.response ?? m.last_response ?? '', 60),
  ];
}

function listingSummary(count: number, truncated: boolean, counts: ReadonlyMap<string, number>): string {
  const states = [...counts].map(([state, n]) => `${n} ${state}`).join(', ');
  const more = truncated ? ' (more match; use --limit)' : '';
  return `${count}${truncated ? '+' : ''} message(s): ${states}${more}`;
}

export function formatListing(listing: QueueListing): string {
  if (listing.messages.length === 0) return 'queue is empty (no message matches)';
  const counts = new Map<string, number>();
  for (const m of listing.messages) counts.set(m.state, (counts.get(m.state) ?? 0) + 1);
  const tableText = table(LISTING_HEADERS, listing.messages.map(listingRow), LISTING_RIGHT_ALIGNED);
  return `${tableText}\n${listingSummary(listing.messages.length, listing.truncated, counts)}`;
}

/**
 * The same table as formatListing, printed as the rows arrive: the first rows (up to BATCH, or
 * what came within FIRST_WAIT_MS) set the column widths, and every later row is printed at once in
 * them (a longer cell pushes its line out rather than hold the output back).
 */
export class StreamedListing {
  private static readonly BATCH = 100;
  private static readonly FIRST_WAIT_MS = 1000;
  private buffered: string[][] = [];
  private widths: number[] | null = null;
  private timer: NodeJS.Timeout | null = null;
  private count = 0;
  private readonly counts = new Map<string, number>();

  constructor(private readonly out: (text: string) => void) {}

  add(entry: QueueEntry): void {
    this.count++;
    this.counts.set(entry.state, (this.counts.get(entry.state) ?? 0) + 1);
    const row = listingRow(entry);
    if (this.widths) return this.out(`${this.line(row)}\n`);
    this.buffered.push(row);
    if (this.buffered.length >= StreamedListing.BATCH) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), StreamedListing.FIRST_WAIT_MS);
  }

  end(truncated: boolean): void {
    if (this.count === 0) return this.out('queue is empty (no message matches)\n');
    this.flush();
    this.out(`${listingSummary(this.count, truncated, this.counts)}\n`);
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.widths) return;
    this.widths = LISTING_HEADERS.map((h, i) => Math.max(h.length, ...this.buffered.map((r) => r[i].length)));
    this.out(`${[LISTING_HEADERS, ...this.buffered].map((row) => this.line(row)).join('\n')}\n`);
    this.buffered = [];
  }

  private line(cells: string[]): string {
    const widths = this.widths as number[];
    return cells
      .map((cell, i) =>
        LISTING_RIGHT_ALIGNED.includes(i)
          ? cell.padStart(widths[i])
          : i === cells.length - 1
            ? cell
            : cell.padEnd(widths[i]),
      )
      .join('  ')
      .trimEnd();
  }
}

export function formatDetail(m: MessageDetail): string {
  const fields: [string, string][] = [
    ['id', m.id],
    [
      'state',
      stateLabel(m) + (m.state === 'deferred' && m.next_attempt_at ? ` (next attempt ${m.next_attempt_at})` : ''),
    ],
    ['client', `${m.client} (listener ${m.listener}, from [${m.remote}])`],
    ['route', m.route],
    ['from', `<${m.from}>`],
    ['size', `${m.size} bytes`],
    ['received', `${m.received_at} (${humanAge(m.age_seconds)} ago)`],
    ['attempts', String(m.attempts)],
  ];
  if (m.held_at) fields.push(['held', m.held_at]);
  if (m.dead) fields.push(['dead', `${m.dead.reason} at ${m.dead.at}: ${m.dead.response}`]);
  const head = table(
    ['', ''],
    fields.map(([k, v]) => [`${k}:`, v]),
  )
    .split('\n')
    .slice(1)
    .join('\n');
  const recipients = table(
    ['RECIPIENT', 'STATUS', 'SMART HOST', 'LAST RESPONSE'],
    m.recipients.map((r) => [r.address, r.status, r.smarthost ?? '-', clip(r.response ?? '-', 100)]),
  );
  const headers =
    m.headers.map((h) => `${h.name}: ${clip(h.value, 200)}`).join('\n') +
    (m.headers_truncated ? '\n(header block truncated)' : '');
  return `${head}\n\n${recipients}\n\n${headers}`;
}

export function formatSmartHosts(hosts: SmartHostStatus[]): string {
  return table(
    ['SMART HOST', 'STATE', 'BREAKER', 'QUOTA LEFT', 'RELAY'],
    hosts.map((h) => [
      h.name,
      h.up ? 'up' : 'down',
      h.breaker ?? '-',
      h.quota.length > 0 ? h.quota.map((q) => `${q.remaining} ${q.unit}/${q.window}`).join(' ') : '-',
      h.relay,
    ]),
  );
}

export function formatStatus(s: StatusReport): string {
  const q = s.queue;
  const oldest = s.oldest
    ? `${s.oldest.id}, ${humanAge(s.oldest.age_seconds)} old (received ${s.oldest.received_at})`
    : 'none (nothing waiting)';
  const lines = [
    `smarthop ${s.version} on ${s.hostname}, up ${humanAge(s.uptime_seconds)} (since ${s.started_at})`,
    `queue:   ${q.ready} ready (${q.active} active), ${q.deferred} deferred, ${q.held} held, ${q.dead} dead`,
    `oldest:  ${oldest}`,
  ];
  if (s.last_reload) {
    const reload = s.last_reload;
    const restart =
      reload.restart_required.length > 0 ? `; restart required for ${reload.restart_required.join(', ')}` : '';
    const errors = reload.ok ? '' : `: ${reload.errors.join('; ')}`;
    lines.push(`reload:  ${reload.ok ? 'ok' : 'FAILED'} at ${reload.at}${restart}${errors}`);
  }
  const up = s.smarthosts.filter((h) => h.up).length;
  lines.push('', `smart hosts: ${up} up, ${s.smarthosts.length - up} down`, formatSmartHosts(s.smarthosts));
  lines.push('', 'top clients (last hour):');
  lines.push(
    s.top_clients.length === 0
      ? 'none'
      : table(
          ['CLIENT', 'MESSAGES', 'RECIPIENTS'],
          s.top_clients.map((c) => [c.client, String(c.messages), String(c.recipients)]),
          [1, 2],
        ),
  );
  return lines.join('\n');
}
