import type { Command } from 'commander';
import { isSpoolId } from '../spool/store';
import { parseTimestamp, parseTraceQuery } from '../trace/query';
import { traceMessages, type TraceReport } from '../trace/trace';
import { TraceIndex } from '../trace/trace-index';
import { RelayUnreachable, errorText } from './client';
import { clientFor, EXIT_REFUSED, EXIT_UNREACHABLE, withTarget, type CommandIo, type CommonOptions } from './commands';
import { resolveTarget } from './target';
import { formatTrace, formatTraceTable } from './trace-format';

interface TraceOptions extends CommonOptions {
  messageId?: string;
  sender?: string;
  recipient?: string;
  client?: string;
  smarthost?: string;
  outcome?: string;
  since?: string;
  from?: string;
  until?: string;
  limit?: string;
  brief?: boolean;
  offline?: boolean;
  events?: string;
}

/**
 * `smarthop trace`: where is my mail? Asks the running relay (`GET /api/trace`); when it does not
 * answer, or with --offline or --events, reads the events files itself (the relay may be stopped).
 * Exit status: 0 something matched, 1 nothing matched or the query was refused, 2 no relay and no
 * events file to read.
 */
export function registerTraceCommand(program: Command, io: CommandIo): void {
  withTarget(program.command('trace'))
    .description("a message's story from the events files: received, every attempt, the outcome, the DSN it caused")
    .argument('[id]', 'a queue id or a Message-ID')
    .option('--message-id <id>', 'the Message-ID header (with or without <>)')
    .option('--sender <pattern>', 'envelope sender: an address, a domain, or a glob (*@corp.example)')
    .option('--recipient <pattern>', 'a recipient: an address, a domain, or a glob (*@example.com, bob*@*)')
    .option('--client <name>', 'the client that sent it (a name from clients)')
    .option('--smarthost <name>', 'a smart host that was tried')
    .option('--outcome <states>', 'delivered, deferred, bounced, expired, rejected, queued (comma separated)')
    .option('--since <duration>', 'received in the last … (30m, 2h, 1d)')
    .option('--from <time>', 'received at or after (2026-11-01T15:00, local time unless it ends in Z or +hh:mm)')
    .option('--until <time>', 'received at or before')
    .option('--limit <n>', 'at most this many messages, newest first', '20')
    .option('--brief', 'one line per message instead of each story')
    .option('--offline', 'read the events files even if the relay is running')
    .option('--events <file>', "read this events file (and its rotated .1, .2 …) instead of the config's events.file")
    .action(function (this: Command, id: string | undefined) {
      const options = this.opts<TraceOptions>();
      return run(io, async () => {
        const query = queryString(options, id);
        const report =
          options.offline || options.events
            ? await readOffline(options, query)
            : await askRelayOrRead(options, query, io);
        const human = options.brief ? formatTraceTable : formatTrace;
        const text = options.json ? JSON.stringify(report, null, 2) : human(report);
        io.out(`${text}\n`);
        if (report.stories.length === 0) io.setExitCode(EXIT_REFUSED);
      });
    });
}

async function run(io: CommandIo, action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (err) {
    io.err(`${(err as Error).message}\n`);
    io.setExitCode(err instanceof RelayUnreachable ? EXIT_UNREACHABLE : EXIT_REFUSED);
  }
}

/** The API's query string: times are turned into absolute UTC here, so "15:00" means the admin's 15:00. */
function queryString(options: TraceOptions, id: string | undefined): URLSearchParams {
  const params = new URLSearchParams();
  if (id !== undefined) params.set(isSpoolId(id) ? 'queue_id' : 'message_id', id);
  const set = (key: string, value: string | undefined) => {
    if (value !== undefined) params.set(key, value);
  };
  set('message_id', options.messageId);
  set('sender', options.sender);
  set('recipient', options.recipient);
  set('client', options.client);
  set('smarthost', options.smarthost);
  set('outcome', options.outcome);
  set('since', options.since);
  for (const key of ['from', 'until'] as const) {
    const value = options[key];
    if (value === undefined) continue;
    const ms = parseTimestamp(value);
    if (ms === undefined)
      throw new Error(
        `--${key}: expected a time like 2026-11-01T15:00 or 2026-11-01 15:00:30Z, got ${JSON.stringify(value)}`,
      );
    params.set(key, new Date(ms).toISOString());
  }
  set('limit', options.limit);
  return params;
}

async function askRelayOrRead(options: TraceOptions, query: URLSearchParams, io: CommandIo): Promise<TraceReport> {
  try {
    const answer = await clientFor(options).request<TraceReport>('GET', `/api/trace?${query}`);
    if (answer.status !== 200) throw new Error(errorText(answer.body));
    return answer.body;
  } catch (err) {
    if (!(err instanceof RelayUnreachable)) throw err;
    io.err(`${err.message}; reading the events files directly\n`);
    return readOffline(options, query);
  }
}

async function readOffline(options: TraceOptions, params: URLSearchParams): Promise<TraceReport> {
  const file = options.events ?? resolveTarget(options).eventsFile;
  if (!file)
    throw new RelayUnreachable(`no events file: set events.file in ${options.config ?? 'the config'} or pass --events`);
  const parsed = parseTraceQuery(params, Date.now());
  if (!parsed.ok) throw new Error(parsed.error);
  return traceMessages(new TraceIndex(file, { persist: true }), parsed.query);
}
