import { existsSync, readFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import type { Readable } from 'node:stream';
import addressparser from 'nodemailer/lib/addressparser';
import { resolveTarget } from '../admin/target';
import { parseHostPort } from '../config/units';
import { parseSendmailArgs, SENDMAIL_USAGE, type SendmailOptions } from './sendmail-args';

/**
 * `smarthop sendmail`, also run as `/usr/sbin/sendmail` through a link: reads one message on stdin
 * and submits it to a smarthop relay over SMTP, with sendmail's flags and exit codes (sysexits.h),
 * so cron, PHP's mail() and scripts that pipe mail need no change. There is no local queue: when
 * the relay cannot take the message, the caller hears so (75, try again later) at once.
 */

export const EX = {
  OK: 0,
  USAGE: 64,
  DATAERR: 65,
  NOUSER: 67,
  UNAVAILABLE: 69,
  SOFTWARE: 70,
  IOERR: 74,
  TEMPFAIL: 75,
  NOPERM: 77,
  CONFIG: 78,
} as const;

export interface SendmailIo {
  stdin: Readable;
  err(text: string): void;
  out(text: string): void;
  env: NodeJS.ProcessEnv;
}

/** A message larger than this is refused before any connection (a relay's limit is far below). */
const MAX_INPUT_BYTES = 256 * 1024 * 1024;
const DEFAULT_CONFIGS = ['/etc/smarthop/relay.config.yaml', 'relay.config.yaml'];

export async function runSendmail(args: readonly string[], io: SendmailIo): Promise<number> {
  const parsed = parseSendmailArgs(args);
  if (!parsed.ok) {
    io.err(`sendmail: ${parsed.error}\n${SENDMAIL_USAGE}`);
    return EX.USAGE;
  }
  const options = parsed.options;
  if (options.help) {
    io.out(SENDMAIL_USAGE);
    return EX.OK;
  }
  const server = resolveServer(options, io.env);
  if (!server.ok) {
    io.err(`sendmail: ${server.error}\n`);
    return EX.CONFIG;
  }
  let input: Buffer;
  try {
    input = await readInput(io.stdin, options.ignoreDots);
  } catch (err) {
    io.err(`sendmail: ${(err as Error).message}\n`);
    return (err as { exitCode?: number }).exitCode ?? EX.IOERR;
  }
  const prepared = prepareMessage(input, options, io.env);
  if (!prepared.ok) {
    io.err(`sendmail: ${prepared.error}\n`);
    return prepared.exitCode;
  }
  let ca: Buffer | undefined;
  if (options.ca !== undefined) {
    try {
      ca = readFileSync(options.ca);
    } catch (err) {
      io.err(`sendmail: --ca ${options.ca}: ${(err as Error).message}\n`);
      return EX.CONFIG;
    }
  }
  return submit(
    prepared,
    server.value,
    { user: options.user, pass: options.pass ?? io.env.SMARTHOP_PASS, insecure: options.insecure, ca },
    io,
  );
}

interface Server {
  host: string;
  port: number;
  implicitTls: boolean;
}

function resolveServer(
  options: SendmailOptions,
  env: NodeJS.ProcessEnv,
): { ok: true; value: Server } | { ok: false; error: string } {
  const given = options.server ?? (env.SMARTHOP_SERVER || undefined);
  if (given !== undefined) {
    const parsed = parseHostPort(given);
    return parsed
      ? { ok: true, value: { ...parsed, implicitTls: false } }
      : { ok: false, error: `--server: expected host:port, got ${JSON.stringify(given)}` };
  }
  const config =
    options.config ?? (env.SMARTHOP_CONFIG || undefined) ?? DEFAULT_CONFIGS.find((file) => existsSync(file));
  if (config === undefined)
    return {
      ok: false,
      error: 'no relay to submit to: pass --server host:port, set SMARTHOP_SERVER, or give a relay config (-C)',
    };
  const smtp = resolveTarget({ config }, env).smtp;
  if (!smtp) return { ok: false, error: `${config}: no listener address found` };
  return { ok: true, value: { host: smtp.host, port: smtp.port, implicitTls: smtp.tls === 'implicit' } };
}

/** stdin whole; without -i a line holding a single dot ends it, as in sendmail. */
async function readInput(stdin: Readable, ignoreDots: boolean): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stdin) {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    total += buffer.length;
    if (total > MAX_INPUT_BYTES)
      throw Object.assign(new Error(`message larger than ${MAX_INPUT_BYTES} bytes`), { exitCode: EX.DATAERR });
    chunks.push(buffer);
  }
  const data = Buffer.concat(chunks);
  if (ignoreDots) return data;
  const end = /(^|\n)\.\r?(\n|$)/.exec(data.toString('latin1'));
  return end ? data.subarray(0, end.index + end[1].length) : data;
}

interface Prepared {
  ok: true;
  from: string;
  to: string[];
  message: Buffer;
}

type Preparation = Prepared | { ok: false; error: string; exitCode: number };

/**
 * The envelope and the bytes to send: recipients from the arguments (and with -t the To, Cc and
 * Bcc fields, Bcc then removed), the sender from -f (else the From field's address, else
 * user@host), and a From field added from -F and the sender when the message has none.
 */
export function prepareMessage(input: Buffer, options: SendmailOptions, env: NodeJS.ProcessEnv = {}): Preparation {
  const { fields, body } = splitMessage(input.toString('latin1'));
  const values = (name: string) =>
    fields.filter((f) => f.name === name).map((f) => Buffer.from(f.value, 'latin1').toString('utf8'));
  const recipients = [...options.recipients.flatMap(addressesIn)];
  if (options.extractRecipients) {
    for (const name of ['to', 'cc', 'bcc']) for (const value of values(name)) recipients.push(...addressesIn(value));
  }
  const to = [...new Set(recipients.filter((address) => address !== ''))];
  if (to.length === 0) {
    return {
      ok: false,
      error: options.extractRecipients
        ? 'no recipient addresses found in the To, Cc or Bcc fields'
        : 'no recipients given (name them, or use -t)',
      exitCode: EX.USAGE,
    };
  }
  const fromField = values('from').flatMap(addressesIn)[0];
  const from = options.sender ?? fromField ?? `${env.USER || userInfo().username}@${hostname()}`;
  let kept = fields.filter((f) => !(options.extractRecipients && f.name === 'bcc')).map((f) => f.raw);
  if (fields.every((f) => f.name !== 'from')) {
    const name = options.fullName?.replace(/[\r\n"\\]/g, '');
    kept = [`From: ${name ? `"${name}" ` : ''}<${from}>`, ...kept];
  }
  return { ok: true, from, to, message: Buffer.from(`${kept.join('\n')}\n\n${body}`, 'latin1') };
}

const FIELD_START = /^[!-9;-~]+:/;

/**
 * The header fields and the body. The header is the run of field lines at the top; the first line
 * that is none ends it (a blank one is dropped, any other starts the body), as sendmail reads it.
 */
function splitMessage(text: string): { fields: Field[]; body: string } {
  const fields: Field[] = [];
  let position = 0;
  while (position < text.length) {
    const newline = text.indexOf('\n', position);
    const end = newline === -1 ? text.length : newline + 1;
    const line = text.slice(position, end).replace(/\r?\n$/, '');
    const last = fields[fields.length - 1];
    if (last && (line.startsWith(' ') || line.startsWith('\t'))) {
      last.raw += `\n${line}`;
      last.value += ` ${line.trim()}`;
    } else if (FIELD_START.test(line)) {
      const colon = line.indexOf(':');
      fields.push({ name: line.slice(0, colon).toLowerCase(), value: line.slice(colon + 1).trim(), raw: line });
    } else {
      return { fields, body: line === '' ? text.slice(end) : text.slice(position) };
    }
    position = end;
  }
  return { fields, body: '' };
}

interface Field {
  name: string;
  value: string;
  /** As it came, folded lines included. */
  raw: string;
}

/** Every address in a header value or an argument (`a@b, "C, D" <c@d>`, groups flattened). */
function addressesIn(value: string): string[] {
  const out: string[] = [];
  const walk = (entries: ReturnType<typeof addressparser>) => {
    for (const entry of entries) {
      if ('group' in entry && entry.group) walk(entry.group);
      else if ('address' in entry && entry.address) out.push(entry.address);
    }
  };
  walk(addressparser(value));
  return out;
}

interface SmtpFailure {
  code?: string;
  responseCode?: number;
  response?: string;
  message: string;
}

async function submit(
  prepared: Prepared,
  server: Server,
  auth: { user?: string; pass?: string; insecure: boolean; ca?: Buffer },
  io: SendmailIo,
): Promise<number> {
  const { default: nodemailer } = await import('nodemailer');
  const transport = nodemailer.createTransport({
    host: server.host,
    port: server.port,
    secure: server.implicitTls,
    name: hostname(),
    // STARTTLS when the relay offers it, with the certificate checked unless told otherwise.
    tls: { rejectUnauthorized: !auth.insecure, ...(auth.ca ? { ca: auth.ca } : {}) },
    auth: auth.user ? { user: auth.user, pass: auth.pass ?? '' } : undefined,
    connectionTimeout: 30_000,
    greetingTimeout: 30_000,
    socketTimeout: 60_000,
  });
  try {
    const info = await transport.sendMail({
      envelope: { from: prepared.from, to: prepared.to },
      raw: prepared.message,
    });
    const rejected = (info.rejectedErrors ?? []) as SmtpFailure[];
    for (const failure of rejected) io.err(`sendmail: ${failure.message}\n`);
    return rejected.length > 0 ? exitCodeOf(rejected[0]) : EX.OK;
  } catch (err) {
    const failure = err as SmtpFailure;
    io.err(`sendmail: ${server.host}:${server.port}: ${failure.message}\n`);
    return exitCodeOf(failure);
  } finally {
    transport.close();
  }
}

/** sysexits for what the relay (or the network) said. */
export function exitCodeOf(failure: SmtpFailure): number {
  const reply = failure.responseCode;
  if (reply === undefined) {
    if (failure.code === 'EAUTH') return EX.NOPERM;
    // A certificate that does not check out will not check out on a retry either.
    if (/certificate|self[- ]signed|altname/i.test(failure.message)) return EX.UNAVAILABLE;
    return EX.TEMPFAIL;
  }
  if (reply >= 400 && reply < 500) return EX.TEMPFAIL;
  const enhanced = /\b5\.(\d)\.\d{1,3}\b/.exec(failure.response ?? failure.message)?.[1];
  if (reply === 535 || enhanced === '7') return EX.NOPERM;
  if (enhanced === '1' && reply === 550) return EX.NOUSER;
  return EX.UNAVAILABLE;
}
