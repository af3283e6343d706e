import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { DEFAULT_LIST_LIMIT, walkSpool, type QueueEntry } from '../spool/inspect';
import { SpoolInUse } from '../spool/lock';
import { SpoolStore } from '../spool/store';
import { AdminClient, errorText, RelayUnreachable, streamLines } from './client';
import { formatDetail, formatListing, formatStatus, StreamedListing } from './format';
import { actOffline } from './offline';
import { parseQueueQuery } from './query';
import { resolveTarget, type TargetOptions } from './target';
import type { ActionResponse, FlushResponse, MessageDetail, QueueListing, ReloadResult, StatusReport } from './types';

/**
 * `smarthop queue list|show|retry|flush|hold|release|delete`, `smarthop status` and `smarthop reload`:
 * thin clients of the admin API. With the relay stopped, `queue list` reads the spool and `queue
 * hold|release|delete` act on it under the spool's lock (offline.ts). Exit status: 0 done, 1 refused
 * (unknown id, conflict, bad filter, wrong token, spool in use), 2 relay unreachable.
 */

export interface CommonOptions extends TargetOptions {
  json?: boolean;
}

export interface CommandIo {
  out(text: string): void;
  err(text: string): void;
  setExitCode(code: number): void;
}

export const EXIT_REFUSED = 1;
export const EXIT_UNREACHABLE = 2;

export function withTarget(command: Command): Command {
  return command
    .option(
      '-c, --config <file>',
      'relay config: its http.address, http.token and spool.dir are used',
      'relay.config.yaml',
    )
    .option('--url <url>', 'admin API base URL (default: from http.address in the config)')
    .option('--token <token>', 'bearer token (default: $SMARTHOP_API_TOKEN, else http.token in the config)')
    .option('--json', 'print JSON for scripts instead of a table');
}

export function clientFor(options: CommonOptions): AdminClient {
  const target = resolveTarget(options);
  if (!target.url)
    throw new RelayUnreachable(
      `no admin API address: set http.address in ${options.config ?? 'the config'} or pass --url`,
    );
  return new AdminClient(target.url, target.token);
}

export function registerAdminCommands(program: Command, io: CommandIo): void {
  const run = (action: () => Promise<void>) => async () => {
    try {
      await action();
    } catch (err) {
      io.err(`${(err as Error).message}\n`);
      io.setExitCode(err instanceof RelayUnreachable ? EXIT_UNREACHABLE : EXIT_REFUSED);
    }
  };
  const print = (options: CommonOptions, body: unknown, human: () => string) =>
    io.out(`${options.json ? JSON.stringify(body, null, 2) : human()}\n`);

  const queue = program
    .command('queue')
    .description("inspect and control a relay's queue (mailq, postqueue, postsuper)");

  withTarget(queue.command('list'))
    .description('list queued, held and dead messages; reads the spool directly when the relay is not running')
    .option('--state <states>', 'ready, deferred, held, dead (comma separated)')
    .option('--client <name>', 'only this client')
    .option('--recipient <text>', 'recipient address contains this (e.g. @example.com)')
    .option('--min-age <duration>', 'older than (e.g. 1h)')
    .option('--max-age <duration>', 'younger than (e.g. 10m)')
    .option('--limit <n>', 'at most this many messages', '1000')
    .option('--offline', 'read the spool directory even if the relay is running')
    .action(function (this: Command) {
      const options = this.opts<
        CommonOptions & {
          state?: string;
          client?: string;
          recipient?: string;
          minAge?: string;
          maxAge?: string;
          limit: string;
          offline?: boolean;
        }
      >();
      return run(async () => {
        const query = new URLSearchParams();
        for (const [key, value] of [
          ['state', options.state],
          ['client', options.client],
          ['recipient', options.recipient],
          ['min_age', options.minAge],
          ['max_age', options.maxAge],
          ['limit', options.limit],
        ] as const) {
          if (value !== undefined) query.set(key, value);
        }
        // Rows are printed as they arrive (a search over a deep queue streams); --json prints one object at the end.
        const limit = options.limit === undefined ? DEFAULT_LIST_LIMIT : Number(options.limit);
        const listing: QueueListing = { messages: [], truncated: false };
        const table = options.json ? null : new StreamedListing((text) => io.out(text));
        const take = (entry: QueueEntry) => (table ? table.add(entry) : listing.messages.push(entry));
        let received = 0;
        const online = async () => {
          const target = resolveTarget(options);
          if (!target.url)
            throw new RelayUnreachable(
              `no admin API address: set http.address in ${options.config ?? 'the config'} or pass --url`,
            );
          query.set('format', 'ndjson');
          for await (const line of streamLines(target.url, target.token, `/api/queue?${query}`)) {
            const record = line as QueueEntry | { truncated: boolean };
            if ('id' in record) {
              received++;
              take(record);
            } else {
              listing.truncated = record.truncated;
            }
          }
        };
        const offline = async () => {
          listing.truncated = await listOffline(options, query, limit, take);
        };
        if (options.offline) {
          await offline();
        } else {
          try {
            await online();
          } catch (err) {
            if (!(err instanceof RelayUnreachable) || received > 0) throw err;
            io.err(`${err.message}; reading the spool directly\n`);
            await offline();
          }
        }
        if (table) table.end(listing.truncated);
        else print(options, listing, () => formatListing(listing));
      })();
    });

  withTarget(queue.command('show'))
    .description('one message: envelope, per-recipient status and last responses, attempts, headers')
    .argument('<id>', 'queue id')
    .action(function (this: Command, id: string) {
      const options = this.opts<CommonOptions>();
      return run(async () => {
        const answer = await clientFor(options).request<MessageDetail>('GET', `/api/queue/${encodeURIComponent(id)}`);
        if (answer.status !== 200) throw new Error(errorText(answer.body));
        print(options, answer.body, () => formatDetail(answer.body));
      })();
    });

  for (const [name, description, verb] of [
    ['retry', 'attempt deferred messages now (smart hosts are tried at once, breakers or not)', 'due now'],
    ['hold', 'keep messages aside (never attempted until released); works with the relay stopped', 'held'],
    ['release', 'put held messages back in the queue, due now; works with the relay stopped', 'released'],
    ['delete', 'delete messages for good (from queue, hold or dead); works with the relay stopped', 'deleted'],
  ] as const) {
    const command = withTarget(queue.command(name)).description(description).argument('<ids...>', 'queue ids');
    if (name !== 'retry')
      command.option('--offline', "act on the spool directory (under its lock) without asking the relay's API");
    command.action(function (this: Command, ids: string[]) {
      const options = this.opts<CommonOptions & { offline?: boolean }>();
      return run(async () => {
        type Result = ({ id: string; ok: true } & ActionResponse) | { id: string; ok: false; error: string };
        let results: Result[] = [];
        const offline = async () => {
          if (name === 'retry')
            throw new RelayUnreachable(
              'retry needs the running relay (a stopped one attempts due messages when it starts)',
            );
          const spoolDir = resolveTarget(options).spoolDir;
          if (!spoolDir) throw new RelayUnreachable(`no spool.dir found in ${options.config ?? 'the config'}`);
          results = (await actOffline(spoolDir, name, ids)).map(({ id, result }) =>
            result.ok ? { ...result.value, id, ok: true } : { id, ok: false, error: result.message },
          );
        };
        try {
          if (options.offline) {
            await offline();
          } else {
            try {
              const client = clientFor(options);
              for (const id of ids) {
                const answer = await client.request<ActionResponse>(
                  'POST',
                  `/api/queue/${encodeURIComponent(id)}/${name}`,
                );
                results.push(
                  answer.status === 200
                    ? { ...answer.body, id, ok: true }
                    : { id, ok: false, error: errorText(answer.body) },
                );
              }
            } catch (err) {
              if (!(err instanceof RelayUnreachable) || results.length > 0 || name === 'retry') throw err;
              io.err(`${err.message}; acting on the spool directly\n`);
              await offline();
            }
          }
        } catch (err) {
          // A running relay (or another queue command) holds the spool: a refusal, not an unreachable relay.
          if (err instanceof SpoolInUse)
            throw new Error(`${err.message}; use the running relay's admin API (--url, http.address)`, { cause: err });
          throw err;
        }
        print(options, results, () =>
          results.map((r) => (r.ok ? `${r.id}: ${verb}` : `${r.id}: ${r.error}`)).join('\n'),
        );
        if (results.some((r) => !r.ok)) io.setExitCode(EXIT_REFUSED);
      })();
    });
  }

  withTarget(queue.command('flush'))
    .description('attempt every deferred message now (postqueue -f)')
    .action(function (this: Command) {
      const options = this.opts<CommonOptions>();
      return run(async () => {
        const answer = await clientFor(options).request<FlushResponse>('POST', '/api/queue/flush');
        if (answer.status !== 200) throw new Error(errorText(answer.body));
        print(options, answer.body, () => `${answer.body.flushed} deferred message(s) due now`);
      })();
    });

  withTarget(program.command('status'))
    .description('queue counts by state, oldest message, smart hosts up/down, top clients of the last hour')
    .action(function (this: Command) {
      const options = this.opts<CommonOptions>();
      return run(async () => {
        const answer = await clientFor(options).request<StatusReport>('GET', '/api/status');
        if (answer.status !== 200) throw new Error(errorText(answer.body));
        print(options, answer.body, () => formatStatus(answer.body));
      })();
    });

  withTarget(program.command('reload'))
    .description('make the running relay re-read its config file (same as SIGHUP); a refused config changes nothing')
    .action(function (this: Command) {
      const options = this.opts<CommonOptions>();
      return run(async () => {
        const answer = await clientFor(options).request<ReloadResult>('POST', '/api/reload');
        if (answer.status !== 200 && answer.status !== 422) throw new Error(errorText(answer.body));
        const result = answer.body;
        print(options, result, () => reloadText(result));
        if (!result.ok) io.setExitCode(EXIT_REFUSED);
      })();
    });
}

/** What `reload` prints: the sections now running new values and what waits for a restart, or why it was refused. */
function reloadText(result: ReloadResult): string {
  if (!result.ok) {
    const errors = result.errors.map((e) => `  ${e}`).join('\n');
    return `reload refused, the relay keeps its running configuration:\n${errors}`;
  }
  const changed = result.changed.length > 0 ? `: ${result.changed.join(', ')}` : ' (no runtime change)';
  const restart =
    result.restart_required.length > 0 ? `\nrestart required for: ${result.restart_required.join(', ')}` : '';
  return `reloaded${changed}${restart}`;
}

/**
 * `queue list` without a relay: the same filter over the spool files, as they are read; true when more matched than
 * `limit`.
 */
async function listOffline(
  options: CommonOptions,
  query: URLSearchParams,
  limit: number,
  take: (entry: QueueEntry) => void,
): Promise<boolean> {
  const target = resolveTarget(options);
  if (!target.spoolDir) throw new RelayUnreachable(`no spool.dir found in ${options.config ?? 'the config'}`);
  if (!existsSync(target.spoolDir)) throw new RelayUnreachable(`spool directory ${target.spoolDir} does not exist`);
  const parsed = parseQueueQuery(query);
  if (!parsed.ok) throw new Error(parsed.error);
  let count = 0;
  for await (const entry of walkSpool(new SpoolStore(target.spoolDir), parsed.filter, Date.now())) {
    if (count === limit) return true;
    count++;
    take(entry);
  }
  return false;
}
