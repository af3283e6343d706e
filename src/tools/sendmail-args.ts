/**
 * sendmail's command line, as cron, PHP's mail(), mailx and most scripts use it:
 *
 *   sendmail [-t] [-i | -oi] [-f sender | -r sender] [-F "Full Name"] [other sendmail flags] [--] [recipient …]
 *
 * Flags a relay has no use for (-oem, -odi, -B8BITMIME, -N never, -v …) are accepted and ignored,
 * as Postfix's sendmail ignores them. Values may be attached (`-fapp@corp.example`) or follow
 * (`-f app@corp.example`). smarthop's own options are long ones: --server, --config, --user,
 * --pass, --insecure, --ca.
 */

export interface SendmailOptions {
  /** -t: recipients from To, Cc and Bcc (added to those given as arguments, as Postfix does); Bcc is removed. */
  extractRecipients: boolean;
  /** -i / -oi: a line with a single dot is text, not the end of the message. */
  ignoreDots: boolean;
  sender?: string;
  fullName?: string;
  recipients: string[];
  server?: string;
  config?: string;
  user?: string;
  pass?: string;
  insecure: boolean;
  ca?: string;
  help: boolean;
}

export type ParsedArgs = { ok: true; options: SendmailOptions } | { ok: false; error: string };

/** Single-letter flags that take a value: ours, and sendmail's that are read and ignored. */
const WITH_VALUE = new Set(['f', 'r', 'F', 'C', 'B', 'h', 'L', 'N', 'O', 'p', 'q', 'R', 'V', 'X']);
/** Single-letter flags without a value that change nothing here. */
const IGNORED = new Set(['v', 'G', 'U', 'n', 'm', 'e', 'x', 's']);
/** `-b` modes: only "deliver a message from stdin" is what this command does. */
const MODES_SUPPORTED = new Set(['m']);
const LONG_WITH_VALUE = new Set(['server', 'config', 'user', 'pass', 'ca']);

export function parseSendmailArgs(args: readonly string[]): ParsedArgs {
  const options: SendmailOptions = {
    extractRecipients: false,
    ignoreDots: false,
    recipients: [],
    insecure: false,
    help: false,
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--') {
      options.recipients.push(...args.slice(i + 1));
      break;
    }
    if (arg.startsWith('--')) {
      const [name, attached] = splitLong(arg.slice(2));
      if (name === 'help') {
        options.help = true;
        continue;
      }
      if (name === 'insecure') {
        options.insecure = true;
        continue;
      }
      if (!LONG_WITH_VALUE.has(name)) return { ok: false, error: `unknown option --${name}` };
      const value = attached ?? args[++i];
      if (value === undefined) return { ok: false, error: `--${name} needs a value` };
      options[name as 'server' | 'config' | 'user' | 'pass' | 'ca'] = value;
      continue;
    }
    if (!arg.startsWith('-') || arg === '-') {
      options.recipients.push(arg);
      continue;
    }
    const flag = arg[1];
    const rest = arg.slice(2);
    if (flag === 'o') {
      // -oi is the only -o option that matters; -oem, -odi, -oee, -oQ… change nothing here.
      if (rest === 'i') options.ignoreDots = true;
      continue;
    }
    if (flag === 'b') {
      if (!MODES_SUPPORTED.has(rest))
        return {
          ok: false,
          error: `-b${rest} is not supported: smarthop sendmail only submits a message read from stdin (-bm)`,
        };
      continue;
    }
    if (flag === 't' || flag === 'i') {
      // Clustered flags such as -ti.
      for (const c of arg.slice(1)) {
        if (c === 't') options.extractRecipients = true;
        else if (c === 'i') options.ignoreDots = true;
        else return { ok: false, error: `unknown flag -${c} in ${arg}` };
      }
      continue;
    }
    if (WITH_VALUE.has(flag)) {
      const value = rest !== '' ? rest : args[++i];
      if (value === undefined) return { ok: false, error: `-${flag} needs a value` };
      if (flag === 'f' || flag === 'r') options.sender = value;
      else if (flag === 'F') options.fullName = value;
      else if (flag === 'C') options.config = value;
      continue;
    }
    if (IGNORED.has(flag) || flag === 'A') continue;
    return { ok: false, error: `unknown flag ${arg}` };
  }
  return { ok: true, options };
}

function splitLong(text: string): [string, string | undefined] {
  const eq = text.indexOf('=');
  return eq === -1 ? [text, undefined] : [text.slice(0, eq), text.slice(eq + 1)];
}

export const SENDMAIL_USAGE = `usage: smarthop sendmail [-t] [-i|-oi] [-f sender] [-F "Full Name"] [--server host:port]
                         [recipient ...] < message

Submits the message on stdin to a smarthop relay over SMTP, as /usr/sbin/sendmail does.
  -t                 also take recipients from the To, Cc and Bcc headers (Bcc is removed)
  -i, -oi            a line with a single "." does not end the message
  -f, -r sender      envelope sender (default: the From header's address, else user@host)
  -F name            full name for the From header, when the message has none
  --server host:port the relay (default: $SMARTHOP_SERVER, else the first listener of the config)
  -C, --config file  relay config to take the first listener from
                     (default: $SMARTHOP_CONFIG, /etc/smarthop/relay.config.yaml, ./relay.config.yaml)
  --user name        AUTH as this user; the password from --pass or $SMARTHOP_PASS
  --ca file          trust this CA for the relay's STARTTLS certificate; --insecure: check nothing
Other sendmail flags (-oem, -odi, -B8BITMIME, -v, ...) are accepted and ignored.
Exit status (sysexits): 0 sent, 64 usage, 65 bad message, 67 recipient unknown, 69 refused,
75 try again later (relay unreachable or 4xx), 77 not allowed (5.7.x), 78 no relay configured.
`;
