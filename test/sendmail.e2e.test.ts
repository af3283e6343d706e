import { execFile, spawn } from 'node:child_process';
import { existsSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { parseSendmailArgs } from '../src/tools/sendmail-args';
import { prepareMessage, runSendmail } from '../src/tools/sendmail';
import type { SinkMessage } from '../src/tools/sink';
import { baseConfig, freePort, relayPerDescribe, waitFor } from './helpers/harness';
import { testUnless } from './helpers/skip';

/**
 * `smarthop sendmail` as the programs that pipe mail run it: PHP's mail() (Debian's php-cli, with
 * sendmail_path pointing at it), a cron-style pipe through a link named `sendmail`, and plain
 * scripts. Real relay, real sink, real exit codes.
 */

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
const PHP = '/usr/bin/php';
const execFileAsync = promisify(execFile);

jest.setTimeout(90_000);

/** Runs a command with `input` on stdin; resolves with its exit code and output (never rejects on a non-zero exit). */
function runWith(
  command: string,
  args: string[],
  input: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input);
  });
}

describe('smarthop sendmail', () => {
  // One relay and sink for every test here: each test waits for the messages that arrive after its start.
  const t = relayPerDescribe(() => ({
    clients: [{ name: 'lan', networks: ['127.0.0.1/32'], policy: 'apps' }],
    policies: { apps: { denied_recipients: ['*@competitor.example'] } },
  }));
  const server = () => `127.0.0.1:${t.running.smtpPort}`;

  /** The next message at the sink after the first `before`. */
  async function nextMessage(before: number, what: string): Promise<SinkMessage> {
    await waitFor(() => t.sink.messages.length > before, 15_000, what);
    expect(t.sink.messages).toHaveLength(before + 1);
    return t.sink.messages[before];
  }

  testUnless(existsSync(PHP) ? null : `no ${PHP} (apt-get install php-cli)`)(
    "PHP's mail(): To, Cc and Bcc reached, Bcc removed; a refused recipient makes mail() return false",
    async () => {
      const before = t.sink.messages.length;
      const sendmailPath = `${process.execPath} ${CLI} sendmail --server ${server()} -t -i`;
      const php = (code: string) =>
        execFileAsync(PHP, ['-n', '-d', `sendmail_path=${sendmailPath}`, '-r', code]).then((r) => r.stdout);
      const sent = await php(
        `echo mail('customer@example.com', 'Invoice 4711', "Dear customer,\\n.\\nattached.", ` +
          `"From: ERP <erp@corp.example>\\r\\nCc: accounts@example.com\\r\\nBcc: archive@corp.example")` +
          ` ? 'sent' : 'failed';`,
      );
      expect(sent).toBe('sent');
      const message = await nextMessage(before, 'the message at the smart host');
      expect(message.from).toBe('erp@corp.example');
      expect(message.to.sort()).toEqual(['accounts@example.com', 'archive@corp.example', 'customer@example.com']);
      const text = message.data.toString();
      expect(text).toMatch(/^Subject: Invoice 4711\r$/m);
      expect(text).toMatch(/^From: ERP <erp@corp\.example>\r$/m);
      expect(text).not.toMatch(/^Bcc:/im);
      // -i: PHP's lone dot is text, not the end of the message.
      expect(text).toMatch(/\r\nDear customer,\r\n\.\.?\r\nattached\.\r\n/);

      const refused = await php(
        `echo mail('rival@competitor.example', 'x', 'y', 'From: erp@corp.example') ? 'sent' : 'failed';`,
      );
      expect(refused).toBe('failed');
      expect(t.sink.messages).toHaveLength(before + 1);
    },
  );

  test('a cron-style pipe through a link named sendmail: -FCronDaemon -i -B8BITMIME -oem', async () => {
    const before = t.sink.messages.length;
    const link = path.join(t.dir, 'sendmail');
    symlinkSync(CLI, link);
    const output = 'Subject: Cron <root@app1> /usr/local/bin/nightly\n\nbackup done\n.\n12 files\n';
    const result = await runWith(
      '/bin/sh',
      ['-c', `printf '%s' "$OUTPUT" | ${link} -FCronDaemon -i -B8BITMIME -oem root@example.com`],
      '',
      { OUTPUT: output, SMARTHOP_SERVER: server() },
    );
    expect(result).toEqual({ code: 0, stdout: '', stderr: '' });
    const message = await nextMessage(before, 'the cron mail');
    const user = userInfo().username;
    expect(message.from).toBe(`${user}@${hostname()}`);
    expect(message.to).toEqual(['root@example.com']);
    expect(message.data.toString()).toMatch(
      new RegExp(`^From: "CronDaemon" <${user}@${hostname().replace(/\./g, '\\.')}>\\r$`, 'm'),
    );
    expect(message.data.toString()).toMatch(/\r\nbackup done\r\n\.\.?\r\n12 files\r\n/);
  });

  test("the config's first listener (-C); without -i a lone dot ends the message; -f sets the sender", async () => {
    const before = t.sink.messages.length;
    const config = path.join(t.dir, 'relay.yaml');
    writeFileSync(
      config,
      stringify({
        ...baseConfig(t.dir, [{ name: 'primary', port: t.sink.port }]),
        listeners: [{ name: 'smtp', address: `0.0.0.0:${t.running.smtpPort}` }],
      }),
    );
    const result = await runWith(
      process.execPath,
      [CLI, 'sendmail', '-C', config, '-f', 'monitor@corp.example', 'ops@example.com'],
      'Subject: disk\n\nfirst\n.\nnever sent\n',
    );
    expect(result.code).toBe(0);
    const message = await nextMessage(before, 'the message');
    expect(message.from).toBe('monitor@corp.example');
    expect(message.data.toString()).toMatch(/\r\n\r\nfirst\r\n$/);
    expect(message.data.toString()).not.toContain('never sent');
  });

  test("sendmail's exit codes: 75 unreachable, 77 refused by policy, 64 usage, 78 no relay known", async () => {
    const down = `127.0.0.1:${await freePort()}`;
    const send = (args: string[], env: NodeJS.ProcessEnv = {}) =>
      runWith(process.execPath, [CLI, 'sendmail', ...args], 'Subject: x\n\ny\n', env);
    const unreachable = await send(['--server', down, 'a@example.com']);
    expect(unreachable.code).toBe(75);
    expect(unreachable.stderr).toMatch(/^sendmail: 127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    const refused = await send(['--server', server(), '-f', 'app@corp.example', 'boss@competitor.example']);
    expect(refused.code).toBe(77);
    expect(refused.stderr).toMatch(/550 5\.7\.1/);
    expect((await send(['--server', server()])).code).toBe(64);
    expect((await send(['a@example.com'], { SMARTHOP_CONFIG: path.join(t.dir, 'missing.yaml') })).code).toBe(78);
    // Other usage errors end the same way in runSendmail, whose status the process exits with (above):
    // checked in this process, without a node process each.
    const usage = (args: string[]) =>
      runSendmail(args, { stdin: Readable.from(['Subject: x\n\ny\n']), env: {}, out: () => {}, err: () => {} });
    expect(await usage(['--server', server(), '-t'])).toBe(64);
    expect(await usage(['-bs', '--server', server()])).toBe(64);
  });
});

describe('sendmail arguments and message', () => {
  test('flags as cron, mailx and PHP pass them', () => {
    const parsed = parseSendmailArgs([
      '-FCronDaemon',
      '-i',
      '-B8BITMIME',
      '-oem',
      '-odi',
      '-v',
      '-N',
      'never',
      '-fapp@corp.example',
      '-ti',
      '--',
      '-weird@example.com',
    ]);
    expect(parsed).toEqual({
      ok: true,
      options: expect.objectContaining({
        fullName: 'CronDaemon',
        ignoreDots: true,
        extractRecipients: true,
        sender: 'app@corp.example',
        recipients: ['-weird@example.com'],
      }),
    });
    expect(parseSendmailArgs(['-oi', '-r', 'x@y.example', 'a@b.example'])).toEqual({
      ok: true,
      options: expect.objectContaining({ ignoreDots: true, sender: 'x@y.example', recipients: ['a@b.example'] }),
    });
    expect(parseSendmailArgs(['-Q'])).toEqual({ ok: false, error: 'unknown flag -Q' });
    expect(parseSendmailArgs(['--server'])).toEqual({ ok: false, error: '--server needs a value' });
  });

  test('-t reads To, Cc and Bcc (groups and quoted names too), removes Bcc, and adds From when missing', () => {
    const options = {
      extractRecipients: true,
      ignoreDots: true,
      recipients: ['extra@example.com'],
      insecure: false,
      help: false,
      fullName: 'Night "Job"',
    };
    const input = Buffer.from(
      'To: "Doe, Jane" <jane@example.com>, team: a@example.com, b@example.com;\n' +
        'Bcc: hidden@example.com\n  , hidden2@example.com\nSubject: s\n\nbody\n',
    );
    const prepared = prepareMessage(input, options, { USER: 'cron' });
    if (!prepared.ok) throw new Error(prepared.error);
    expect(prepared.to).toEqual([
      'extra@example.com',
      'jane@example.com',
      'a@example.com',
      'b@example.com',
      'hidden@example.com',
      'hidden2@example.com',
    ]);
    expect(prepared.from).toBe(`cron@${hostname()}`);
    expect(prepared.message.toString()).toBe(
      `From: "Night Job" <cron@${hostname()}>\n` +
        'To: "Doe, Jane" <jane@example.com>, team: a@example.com, b@example.com;\nSubject: s\n\nbody\n',
    );
    // No header at all: the text is the body, behind the From that is added.
    const bare = prepareMessage(
      Buffer.from('just text\nmore\n'),
      { ...options, extractRecipients: false },
      { USER: 'cron' },
    );
    expect(bare.ok && bare.message.toString()).toBe(`From: "Night Job" <cron@${hostname()}>\n\njust text\nmore\n`);
  });
});
