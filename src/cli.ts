#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { Command, InvalidArgumentError } from 'commander';
import { registerAdminCommands } from './admin/commands';
import { registerTraceCommand } from './admin/trace-command';
import type { RelayConfig } from './config/schema';
import { parseHostPort } from './config/units';
import { hashPassword } from './ingress/password';
import type { DNSResolver } from 'mailauth';
import { VERSION } from './version';

// The relay, the sink, nodemailer and the config loader (the whole schema) are loaded by the commands
// that use them, so the admin commands (run often, from scripts and health checks) start quickly.

const program = new Command('smarthop')
  .description('SMTP relay for LAN applications: trusted clients in, smart hosts out')
  .version(VERSION);

async function loadOrExit(file: string): Promise<RelayConfig> {
  const { loadConfigFile } = await import('./config/load.js');
  const { loadRouteKeys } = await import('./forward/reenvelope/dkim-keys.js');
  const result = loadConfigFile(file);
  // Key files are part of the config: a missing or wrong DKIM key is reported like any other error.
  const errors = result.ok ? loadRouteKeys(result.config.routes).errors : result.errors;
  if (!result.ok || errors.length > 0) {
    process.stderr.write(`${file}: invalid configuration\n${errors.map((e) => `  ${e}\n`).join('')}`);
    process.exit(1);
  }
  return result.config;
}

function hostPort(value: string): { host: string; port: number } {
  const parsed = parseHostPort(value);
  if (!parsed) throw new InvalidArgumentError('expected host:port');
  return parsed;
}

program
  .command('start')
  .description('run the relay')
  .option('-c, --config <file>', 'config file', 'relay.config.yaml')
  .action(async (opts: { config: string }) => {
    const { Relay } = await import('./relay.js');
    const { loadConfigFile } = await import('./config/load.js');
    let relay: InstanceType<typeof Relay>;
    try {
      relay = new Relay(await loadOrExit(opts.config), { configSource: () => loadConfigFile(opts.config) });
    } catch (err) {
      // Files the config names (a smart host's `ca`, TLS keys, DKIM keys) are read here: a missing one is a config
      // error.
      process.stderr.write(`${opts.config}: cannot start: ${(err as Error).message}\n`);
      process.exit(1);
    }
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      relay.logger.info(`${signal}: stopping (sessions in DATA and deliveries under way may finish)`);
      relay.stop().then(
        () => {
          relay.logger.info('stopped');
          process.exit(0);
        },
        (err: Error) => {
          relay.logger.error({ err }, `stop failed: ${err.message}`);
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // systemd's ExecReload sends SIGHUP; the outcome is logged and counted by the relay itself.
    process.on('SIGHUP', () => {
      if (!stopping) void relay.reload('SIGHUP');
    });
    try {
      await relay.start();
    } catch (err) {
      relay.logger.fatal({ err }, `cannot start: ${(err as Error).message}`);
      // Also in plain words for whoever typed the command (the log may go elsewhere).
      process.stderr.write(`${opts.config}: cannot start: ${(err as Error).message}\n`);
      process.exit(1);
    }
  });

program
  .command('check-config')
  .description('validate a config file; prints every error with its path, exit 1 on error')
  .option('-c, --config <file>', 'config file', 'relay.config.yaml')
  .action(async (opts: { config: string }) => {
    const config = await loadOrExit(opts.config);
    process.stdout.write(
      `${opts.config}: ok (${config.listeners.length} listener(s), ${config.clients.length} client(s), ` +
        `${Object.keys(config.routes).length} route(s), ${config.smarthosts.length} smart host(s))\n`,
    );
  });

program
  .command('doctor')
  .description(
    'check DNS for every route and sender domain (DKIM key published, SPF, DMARC alignment) and every Graph ' +
      'smart host (token, mailbox); exit 1 if DMARC would fail or a Graph host cannot send',
  )
  .option('-c, --config <file>', 'config file', 'relay.config.yaml')
  .option('--dns <server>', 'ask this DNS server (ip, ip:port or [v6]:port) instead of the system resolvers')
  .action(async (opts: { config: string; dns?: string }) => {
    // The doctor brings mailauth's SPF/DMARC code (and nodemailer with it): loaded for this command
    // only, so `smarthop start` does not carry it.
    const { runDoctor } = await import('./tools/doctor/doctor.js');
    const { exitCode, formatGraphReport, formatReport, graphExitCode } = await import('./tools/doctor/report.js');
    const { checkGraphHost } = await import('./tools/doctor/graph.js');
    const { loadRouteKeys } = await import('./forward/reenvelope/dkim-keys.js');
    const config = await loadOrExit(opts.config);
    const { keys } = loadRouteKeys(config.routes);
    const rows = await runDoctor({ config, keys, resolver: await resolverOrExit(opts.dns) });
    const graphHosts = config.smarthosts.flatMap((host) => (host.type === 'graph' ? [host] : []));
    const graphChecks = await Promise.all(graphHosts.map((host) => checkGraphHost(host)));
    process.stdout.write(formatReport(rows));
    if (graphChecks.length > 0) process.stdout.write(`\n${formatGraphReport(graphChecks)}`);
    process.exitCode = Math.max(exitCode(rows), graphExitCode(graphChecks));
  });

program
  .command('hash-password')
  .description('read a password (stdin, or a prompt on a terminal) and print its scrypt hash for password_hash')
  .action(async () => {
    const password = process.stdin.isTTY ? await promptHidden('Password: ') : readStdin();
    if (password === '') {
      process.stderr.write('empty password refused\n');
      process.exit(1);
    }
    process.stdout.write(`${await hashPassword(password)}\n`);
  });

program
  .command('sink')
  .description('a capture smart host: writes every message it receives to a folder, one log line each')
  .option('-l, --listen <host:port>', 'address to listen on', hostPort, { host: '127.0.0.1', port: 2601 })
  .option('-d, --dir <folder>', 'where to write received messages', './var/sink')
  .action(async (opts: { listen: { host: string; port: number }; dir: string }) => {
    const { SmtpSink } = await import('./tools/sink.js');
    const sink = new SmtpSink({
      host: opts.listen.host,
      port: opts.listen.port,
      dir: opts.dir,
      log: (line) => process.stdout.write(`${line}\n`),
    });
    const address = await sink.listen();
    // The pid, because `npx smarthop sink` runs this process under npm and a shell: this is the one to stop.
    const where = `${address.address}:${address.port}`;
    process.stdout.write(`sink: listening on ${where}, writing to ${opts.dir} (pid ${process.pid})\n`);
    const stop = () => void sink.close().then(() => process.exit(0));
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });

program
  .command('send')
  .description('send one test message through a relay')
  .option('-s, --server <host:port>', 'relay address', hostPort, { host: '127.0.0.1', port: 2525 })
  .requiredOption('-f, --from <address>', 'envelope and header sender')
  .requiredOption('-t, --to <address...>', 'recipient(s)')
  .option('--subject <text>', 'subject', 'smarthop test message')
  .option('--body <text>', 'body text', 'This is a test message sent with smarthop send.')
  .option('--file <eml>', 'send this raw RFC 5322 message instead of composing one')
  .option('-u, --user <name>', 'AUTH username')
  .option('-p, --pass <password>', 'AUTH password (or SMARTHOP_PASS from the environment)')
  .option('--ca <file>', "trust this CA (PEM) for the relay's STARTTLS certificate")
  .option('--insecure', 'STARTTLS without checking the certificate (a test relay with a self-signed one)')
  .action(async (opts: SendOptions) => {
    const pass = opts.pass ?? process.env.SMARTHOP_PASS;
    let ca: Buffer | undefined;
    try {
      ca = opts.ca === undefined ? undefined : readFileSync(opts.ca);
    } catch (err) {
      process.stderr.write(`--ca ${opts.ca}: ${(err as Error).message}\n`);
      process.exit(1);
    }
    const { default: nodemailer } = await import('nodemailer');
    // STARTTLS whenever the relay offers it, and its certificate is checked: a password (or the
    // message) must not go to whoever answers in its place. --insecure says so out loud.
    const transport = nodemailer.createTransport({
      host: opts.server.host,
      port: opts.server.port,
      secure: false,
      ignoreTLS: false,
      tls: { rejectUnauthorized: !opts.insecure, ...(ca ? { ca } : {}) },
      auth: opts.user ? { user: opts.user, pass: pass ?? '' } : undefined,
    });
    if (opts.insecure) process.stderr.write("warning: --insecure: the relay's TLS certificate is not checked\n");
    try {
      const envelope = { from: opts.from, to: opts.to };
      const info = opts.file
        ? await transport.sendMail({ envelope, raw: readFileSync(opts.file) })
        : await transport.sendMail({ envelope, from: opts.from, to: opts.to, subject: opts.subject, text: opts.body });
      process.stdout.write(`${info.response}\n`);
    } catch (err) {
      const message = (err as Error).message;
      const certificate = /certificate|self[- ]signed|altnames|unable to verify/i.test(message);
      const hint =
        "\nthe relay's STARTTLS certificate did not check out: trust its CA with --ca FILE, or skip the" +
        ' check with --insecure';
      process.stderr.write(`${message}${certificate ? hint : ''}\n`);
      process.exitCode = 1;
    } finally {
      transport.close();
    }
  });

interface SendOptions {
  server: { host: string; port: number };
  from: string;
  to: string[];
  subject: string;
  body: string;
  file?: string;
  user?: string;
  pass?: string;
  ca?: string;
  insecure?: boolean;
}

async function resolverOrExit(server: string | undefined): Promise<DNSResolver> {
  const { dnsResolver } = await import('./tools/doctor/dns.js');
  try {
    return dnsResolver(server);
  } catch (err) {
    process.stderr.write(`--dns ${server}: ${(err as Error).message}\n`);
    process.exit(1);
  }
}

const io = {
  out: (text: string) => process.stdout.write(text),
  err: (text: string) => process.stderr.write(text),
  setExitCode: (code: number) => {
    process.exitCode = code;
  },
};
registerAdminCommands(program, io);
registerTraceCommand(program, io);

function readStdin(): string {
  // One trailing newline (from `echo` or a heredoc) is not part of the password.
  return readFileSync(0, 'utf8').replace(/\r?\n$/, '');
}

function promptHidden(question: string): Promise<string> {
  const muted = new Writable({ write: (_chunk, _encoding, callback) => callback() });
  process.stdout.write(question);
  const rl = createInterface({ input: process.stdin, output: muted, terminal: true });
  return new Promise((resolve) => {
    rl.question('', (answer) => {
      rl.close();
      process.stdout.write('\n');
      resolve(answer);
    });
  });
}

program
  .command('sendmail')
  .description("submit a message from stdin to a relay, with sendmail's flags and exit codes (see sendmail --help)")
  .helpOption(false)
  .allowUnknownOption();

// sendmail's flags (-t, -oi, -fSENDER, -FNAME …) are not commander's: they are read by its own parser,
// also when this file runs through a link named sendmail.
const invokedAs = path.basename(process.argv[1] ?? '');
if (invokedAs === 'sendmail' || process.argv[2] === 'sendmail') {
  void import('./tools/sendmail.js').then(({ runSendmail, EX }) =>
    runSendmail(process.argv.slice(invokedAs === 'sendmail' ? 2 : 3), {
      stdin: process.stdin,
      env: process.env,
      out: (text) => process.stdout.write(text),
      err: (text) => process.stderr.write(text),
    }).then(
      (code) => {
        process.exitCode = code;
      },
      (err: Error) => {
        process.stderr.write(`sendmail: ${err.message}\n`);
        process.exitCode = EX.SOFTWARE;
      },
    ),
  );
} else {
  program.parseAsync(process.argv).catch((err: Error) => {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  });
}
