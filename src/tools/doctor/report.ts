import type { DoctorRow } from './doctor';
import type { GraphHostCheck } from './graph';

/** The doctor's output: an aligned table, then what is wrong per row with the records involved. Pure. */

export function alignedTable(header: string[], rows: string[][]): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

function dkimCell(row: DoctorRow): string {
  if (row.dkim.length === 0) return 'unsigned';
  return row.dkim.map((check) => `${check.key.domain}/${check.key.selector} ${check.status}`).join(', ');
}

function dmarcCell(row: DoctorRow): string {
  if (row.dmarc === null) return '-';
  const policy = row.dmarc.policy ? ` p=${row.dmarc.policy}` : '';
  const aligned =
    row.dmarc.result === 'pass' && row.dmarc.alignedBy.length > 0 ? ` (${row.dmarc.alignedBy.join('+')})` : '';
  return `${row.dmarc.result}${policy}${aligned}`;
}

export function formatReport(rows: DoctorRow[]): string {
  const table = alignedTable(
    ['ROUTE', 'FROM', 'ENVELOPE', 'DKIM', 'SPF', 'DMARC', 'VERDICT'],
    rows.map((row) => [
      row.identity.route,
      row.identity.fromDomain ?? "(client's)",
      row.identity.envelopeDomain ?? "(client's)",
      dkimCell(row),
      row.spf.status,
      dmarcCell(row),
      row.verdict.toUpperCase(),
    ]),
  );
  const details = rows
    .filter((row) => row.problems.length > 0)
    .map((row) =>
      [
        `${row.verdict.toUpperCase()} ${row.identity.route} / ${row.identity.fromDomain ?? "(client's From)"}:`,
        ...row.problems.map((problem) => problem.replace(/^/gm, '  ')),
      ].join('\n'),
    );
  const failing = rows.filter((row) => row.verdict === 'fail').length;
  const summary =
    failing > 0
      ? `${failing} of ${rows.length} sender identities would fail DMARC`
      : `no sender identity would fail DMARC (${rows.length} checked)`;
  return [table, ...(details.length > 0 ? ['', ...details] : []), '', summary, ''].join('\n');
}

/** 1 when something would fail DMARC. */
export function exitCode(rows: DoctorRow[]): number {
  return rows.some((row) => row.verdict === 'fail') ? 1 : 0;
}

/** The Graph smart hosts' checks: a table, then what to fix per host. Empty when there are none. */
export function formatGraphReport(checks: readonly GraphHostCheck[]): string {
  if (checks.length === 0) return '';
  const rows = checks.map((check) => [check.smarthost, check.token, check.mailbox, check.verdict.toUpperCase()]);
  const table = alignedTable(['GRAPH SMARTHOST', 'TOKEN', 'MAILBOX', 'VERDICT'], rows);
  const details = checks
    .filter((check) => check.problems.length > 0)
    .map((check) => [`${check.verdict.toUpperCase()} ${check.smarthost}:`, ...check.problems.map((p) => `  ${p}`)])
    .map((lines) => lines.join('\n'));
  const failing = checks.filter((check) => check.verdict === 'fail').length;
  const summary =
    failing > 0
      ? `${failing} of ${checks.length} Graph smart hosts cannot send`
      : `no Graph smart host failed its checks (${checks.length} checked)`;
  return [table, ...(details.length > 0 ? ['', ...details] : []), '', summary, ''].join('\n');
}

/** 1 when some Graph smart host cannot send. */
export function graphExitCode(checks: readonly GraphHostCheck[]): number {
  return checks.some((check) => check.verdict === 'fail') ? 1 : 0;
}
