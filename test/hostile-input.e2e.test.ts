import { writeFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import type { SmtpSink } from '../src/tools/sink';
import { ChildRelay, tearDownChildRelay } from './helpers/child-relay';
import { makeDkimKey } from './helpers/dkim-key';
import { freePort } from '../bench/free-port';
import { metricsText, metricValue } from './helpers/metrics-text';
import { openSession, type RawSmtpClient } from './helpers/smtp-client';
import { startSink } from './helpers/start-sink';
import { tempDir } from './helpers/temp-dir';
import { waitFor } from './helpers/wait-for';

/**
 * Every parser that reads a client's bytes is linear in them and bounded, so no message can hold
 * the event loop that every session shares. The relay runs as its own process (its event loop is
 * then the one measured), with every address and header rule active: allowed_senders, recipient
 * lists, header rules, blocked attachments, rewrite_from and DKIM. While a trusted client sends the
 * worst inputs we know of, a bystander session on the same relay keeps sending ordinary mail.
 *
 * Each attack is sent beside the bystander (again where it seemed to hold, see underAttack). Two
 * measures, each asserted: the relay's own smarthop_event_loop_delay_seconds may count no
 * sample over HELD_BOUND_MS during an attack (an interval in which the loop served nobody, exact
 * and independent of the test's own timing), and every reply the bystander waits for arrives
 * within BYSTANDER_BOUND_MS of its command. The bystander's round trips also carry the scheduling
 * of two processes on a shared machine (on an idle one they stay under 100 ms; with a load of 11 on
 * two cores they reached 420 ms while the relay's loop was never held), so their bound is wider.
 */

/** Issue 20's bound on how long one client may hold everybody else. */
const HELD_BOUND_MS = 250;
/** A bystander's reply, held by the relay at most HELD_BOUND_MS, plus what a loaded machine adds. */
const BYSTANDER_BOUND_MS = 1000;

const DATE = 'Date: Mon, 23 Nov 2026 10:00:00 +0000';

function mail(headers: string[], body = 'Hello from a legacy app.'): string {
  const hasFrom = headers.some((line) => /^from:/i.test(line));
  return [...(hasFrom ? [] : ['From: <app@corp.example>']), ...headers, 'To: user@example.com', DATE, '', body].join(
    '\r\n',
  );
}

/** An ordinary session beside the attack: one transaction after another, every reply timed. */
class Bystander {
  readonly latencies: number[] = [];
  transactions = 0;

  private constructor(private readonly client: RawSmtpClient) {}

  static async open(port: number): Promise<Bystander> {
    const { client, ehlo } = await openSession(port);
    expect(ehlo).toMatch(/^250/);
    return new Bystander(client);
  }

  /** Transactions back to back until `attack` settles (at least one of them entirely while it runs). */
  async alongside<T>(attack: Promise<T>): Promise<T> {
    let settled = false;
    const outcome = attack.finally(() => {
      settled = true;
    });
    do await this.transaction();
    while (!settled);
    return outcome;
  }

  get slowestMs(): number {
    return Math.max(...this.latencies);
  }

  async close(): Promise<void> {
    await this.client.quit();
  }

  private async transaction(): Promise<void> {
    expect(await this.timed('MAIL FROM:<app@corp.example>\r\n')).toMatch(/^250 /);
    expect(await this.timed('RCPT TO:<user@example.com>\r\n')).toMatch(/^250 /);
    expect(await this.timed('DATA\r\n')).toMatch(/^354 /);
    expect(await this.timed(`${mail(['Subject: bystander'])}\r\n.\r\n`)).toMatch(/^250 2\.0\.0 Ok: queued/);
    expect(await this.timed('NOOP\r\n')).toMatch(/^250 /);
    this.transactions++;
  }

  private async timed(data: string): Promise<string | null> {
    const start = performance.now();
    this.client.write(data);
    const reply = await this.client.reply();
    this.latencies.push(performance.now() - start);
    return reply;
  }
}

describe('hostile input: no message holds the event loop others share', () => {
  let dir: string;
  let smtpPort: number;
  let httpPort: number;
  let sink: SmtpSink;
  let relay: ChildRelay | null = null;

  beforeAll(async () => {
    dir = tempDir();
    let sinkPort: number;
    [smtpPort, httpPort, sinkPort] = [await freePort(), await freePort(), await freePort()];
    sink = await startSink({ port: sinkPort, keep: false });
    const key = makeDkimKey(dir, 'ed25519');
    const configFile = path.join(dir, 'relay.yaml');
    writeFileSync(
      configFile,
      stringify({
        hostname: 'relay.test',
        spool: { dir: './spool', min_free_disk: 0 },
        listeners: [{ name: 'smtp', address: `127.0.0.1:${smtpPort}`, tls: 'none', auth: 'off' }],
        clients: [{ name: 'app', networks: ['127.0.0.1/32'], policy: 'strict' }],
        policies: {
          strict: {
            route: 'out',
            allowed_senders: ['*@corp.example', '<>'],
            allowed_recipients: ['*@example.com', '*.example.net'],
            denied_recipients: ['*@competitor.example', 'ceo@example.com'],
            header_rules: [
              { header: 'Subject', match: 'lottery', action: 'reject' },
              { header: 'X-Mailer', match: 'PHPMailer', action: 'strip' },
            ],
            blocked_attachments: ['exe'],
          },
        },
        routes: {
          out: {
            smarthosts: ['sink'],
            rewrite_from: { unless: ['*@corp.example'], to: 'noreply@corp.example' },
            dkim: { domain: 'corp.example', selector: 's1', private_key: key.file },
          },
        },
        smarthosts: [{ name: 'sink', host: '127.0.0.1', port: sinkPort, tls: 'none' }],
        http: { address: `127.0.0.1:${httpPort}` },
        log: { level: 'warn' },
      }),
    );
    relay = await ChildRelay.start(configFile, httpPort);
    ownPriority = getPriority();
    measuredFirst(relay.process.pid);
    measuredFirst(process.pid);
  }, 30_000);

  afterAll(async () => {
    if (ownPriority !== undefined) measuredFirst(process.pid, ownPriority);
    await tearDownChildRelay(relay, 'SIGTERM', sink, dir);
  });

  let ownPriority: number | undefined;

  /**
   * The relay and this test (the bystander's clock) run ahead of other work on the machine, as a
   * benchmark pins its processes: on a machine shared with other test runs (a load of 20 on two
   * cores) an idle process waits hundreds of milliseconds for a core, which is no relay's doing. Where
   * the priority cannot be raised (not root), the measures stand as they are.
   */
  function measuredFirst(pid: number | undefined, priority = -15): void {
    try {
      if (pid !== undefined) setPriority(pid, priority);
    } catch {
      // Not permitted here: measured at the usual priority.
    }
  }

  /**
   * The relay's own view: samples of smarthop_event_loop_delay_seconds over the bound, and how many
   * samples there are (so a caller can wait until the monitor has ticked after what it measures).
   */
  async function loopDelay(): Promise<{ stalls: number; samples: number }> {
    const text = await metricsText(httpPort);
    const samples = metricValue(text, 'smarthop_event_loop_delay_seconds_count');
    const within = metricValue(text, `smarthop_event_loop_delay_seconds_bucket{le="${HELD_BOUND_MS / 1000}"}`);
    if (samples === undefined || within === undefined)
      throw new Error('smarthop_event_loop_delay_seconds is missing from /metrics');
    return { stalls: samples - within, samples };
  }

  async function rejected(reason: string): Promise<number> {
    return (
      metricValue(await metricsText(httpPort), `smarthop_messages_rejected_total{client="app",reason="${reason}"}`) ?? 0
    );
  }

  /** How many times underAttack sent an attack: once, or up to twice more where it seemed to hold. */
  let attacksSent = 0;

  /**
   * Runs `attack` on a session of its own while a bystander sends mail beside it; returns what the
   * attack returned once both the bystander's replies and the relay's loop delay are within bounds.
   * An attack that seemed to hold the loop or the bystander is measured again, up to twice, and the
   * last measure is asserted: a parser that holds the loop does so every time, while V8 compiling a
   * parser's code on its first worst case (up to ~100 ms of CPU on a cold relay, several times that in
   * wall time on a shared machine), or a moment in which a loaded machine gave the relay no CPU,
   * rarely comes twice in a row.
   */
  async function underAttack<T>(attack: (client: RawSmtpClient) => Promise<T>): Promise<T> {
    let measured = await measure(attack);
    for (let again = 0; again < 2 && (measured.slowestMs >= BYSTANDER_BOUND_MS || measured.stalls > 0); again++) {
      process.stdout.write(
        `${expect.getState().currentTestName}: held on measure ${again + 1} ` +
          `(bystander ${measured.slowestMs.toFixed(1)} ms, loop stalls ${measured.stalls}); measured again\n`,
      );
      measured = await measure(attack);
    }
    expect(measured.transactions).toBeGreaterThan(0);
    expect(measured.slowestMs).toBeLessThan(BYSTANDER_BOUND_MS);
    expect(measured.stalls).toBe(0);
    return measured.outcome;
  }

  /** One measured run of `attack` beside a bystander: its outcome, the bystander's worst, the loop's stalls. */
  async function measure<T>(
    attack: (client: RawSmtpClient) => Promise<T>,
  ): Promise<{ outcome: T; slowestMs: number; transactions: number; stalls: number }> {
    const bystander = await Bystander.open(smtpPort);
    // One transaction first: what is measured is the attack, not the relay's first message.
    await bystander.alongside(Promise.resolve());
    bystander.latencies.length = 0;
    bystander.transactions = 0;
    const before = await loopDelay();
    const { client } = await openSession(smtpPort);
    attacksSent++;
    const outcome = await bystander.alongside(attack(client));
    await client.quit();
    await bystander.close();
    // Two more ticks of the monitor: whatever the attack cost the loop is then in the histogram.
    const ticked = (await loopDelay()).samples + 2;
    await waitFor(async () => (await loopDelay()).samples >= ticked, 5000, 'the loop delay monitor to tick');
    const after = await loopDelay();
    const figures = {
      outcome,
      slowestMs: bystander.slowestMs,
      transactions: bystander.transactions,
      stalls: after.stalls - before.stalls,
    };
    if (process.env.HOSTILE_INPUT_REPORT) {
      process.stdout.write(
        `${expect.getState().currentTestName}: bystander ${figures.slowestMs.toFixed(1)} ms ` +
          `over ${figures.transactions} transactions, loop stalls ${figures.stalls}\n`,
      );
    }
    return figures;
  }

  const send = (headers: string[], body?: string) => (client: RawSmtpClient) =>
    client.sendMessage('app@corp.example', ['user@example.com'], mail(headers, body));

  test('issue 20: From <app@corp.example> + 250,000 × "a" gets 550 5.6.0 at once, counted, holds nobody', async () => {
    const before = await rejected('header_limit');
    const sentBefore = attacksSent;
    const reply = await underAttack(send([`From: <app@corp.example> ${'a'.repeat(250_000)}`]));
    expect(reply).toBe('550 5.6.0 Header field From is longer than 8192 bytes');
    // Each time it was sent, refused and counted.
    expect(await rejected('header_limit')).toBe(before + (attacksSent - sentBefore));
  });

  describe('header fields too large to be real', () => {
    test.each<[string, string[], string]>([
      [
        '1 MB From',
        [`From: <app@corp.example> ${'a'.repeat(1 << 20)}`],
        '552 5.3.4 Message header exceeds 262144 bytes',
      ],
      ['1 MB Sender', [`Sender: ${'b'.repeat(1 << 20)}@corp.example`], '552 5.3.4 Message header exceeds 262144 bytes'],
      [
        '1 MB Subject',
        [`Subject: ${'lottery '.repeat((1 << 20) / 8)}`],
        '552 5.3.4 Message header exceeds 262144 bytes',
      ],
      [
        'a 200 KB Sender',
        [`Sender: <app@corp.example> ${'x'.repeat(200_000)}`],
        '550 5.6.0 Header field Sender is longer than 8192 bytes',
      ],
      [
        'a 100 KB Subject',
        [`Subject: ${'s'.repeat(100_000)}`],
        '550 5.6.0 Header field subject is longer than 65536 bytes',
      ],
      [
        '120,000 nested comments in From',
        [`From: ${'('.repeat(120_000)}${')'.repeat(120_000)} <app@corp.example>`],
        '550 5.6.0 Header field From is longer than 8192 bytes',
      ],
      [
        '40,000 header fields',
        Array.from({ length: 40_000 }, () => 'X: y'),
        '550 5.6.0 Message header has more than 1000 fields',
      ],
      [
        '100,000 header fields',
        Array.from({ length: 100_000 }, () => 'X-A: b'),
        '552 5.3.4 Message header exceeds 262144 bytes',
      ],
    ])('%s', async (_name, headers, expected) => {
      expect(await underAttack(send(headers))).toBe(expected);
    });
  });

  describe('the worst inputs within the bounds are read in linear time', () => {
    const nested = (depth: number, inside: string) => `${'('.repeat(depth)}${inside}${')'.repeat(depth)}`;
    const b64 = (text: string) => `=?utf-8?b?${Buffer.from(text).toString('base64')}?=`;

    test.each<[string, string[], string]>([
      [
        '8,000 address characters without "@" after the From mailbox',
        [`From: <app@corp.example> ${'a'.repeat(8000)}`],
        '250',
      ],
      ['the same run inside the display name', [`From: "${'a.'.repeat(3900)}" <app@corp.example>`], '250'],
      [
        '4,000 nested comments hiding a foreign From',
        [`From: ${nested(4000, 'ceo@bank.example')} <app@corp.example>`],
        '550 5.7.1 Header From <ceo@bank.example> not allowed for client app',
      ],
      [
        'a foreign address after "@" in a comment, behind 3,000 nested comments',
        [`From: ${nested(3000, 'x')} ceo@(x)bank.example <app@corp.example>`],
        '550 5.7.1 Header From <ceo@',
      ],
      [
        'every Sender is read: the second hides a fullwidth ＠',
        ['Sender: <app@corp.example>', `Sender: ${'a '.repeat(3000)}ceo＠bank.example`],
        '550 5.7.1 Header Sender <ceo',
      ],
      ['500 encoded words in From', [`From: ${'=?utf-8?q?a?= '.repeat(500)}<app@corp.example>`], '250'],
      [
        'an encoded word naming a foreign address among 400 others',
        [`From: ${'=?utf-8?q?a?= '.repeat(400)}x ${b64('ceo@bank.example')} <app@corp.example>`],
        '550 5.7.1 Header From <ceo@bank.example> not allowed for client app',
      ],
      [
        '3,000 encoded words in a Subject under a header rule',
        [`Subject: ${'=?utf-8?q?hi?= '.repeat(3000)}${b64('lottery')}`],
        '550 5.7.1 Message refused by a header rule on Subject for client app',
      ],
      [
        '60 KB of whitespace between encoded words',
        [`Subject: =?utf-8?q?a?=${' '.repeat(30_000)}\r\n ${' '.repeat(30_000)}=?utf-8?q?b?=`],
        '250',
      ],
      [
        'a From of 400 mailboxes in a group',
        [`From: team: ${Array.from({ length: 400 }, (_, i) => `a${i}@corp.example`).join(',')};`],
        '250',
      ],
      ['60 KB of address characters without "@" in a Subject', [`Subject: ${'a'.repeat(60_000)}`], '250'],
      [
        '900 header fields that a strip rule removes',
        Array.from({ length: 900 }, () => 'X-Mailer: PHPMailer 6'),
        '250',
      ],
    ])('%s', async (_name, headers, expected) => {
      const reply = await underAttack(send(headers));
      expect(reply?.slice(0, expected.length)).toBe(expected);
    });

    test('a 60 KB attachment name of dots and spaces, and an .exe behind one', async () => {
      const part = (name: string) => [
        'Content-Type: multipart/mixed; boundary="b"',
        '',
        '--b',
        'Content-Type: application/octet-stream',
        `Content-Disposition: attachment; filename="${name}"`,
        '',
        'AAAA',
        '--b--',
        '',
      ];
      const [headerLine, , ...body] = part(`invoice${'. '.repeat(30_000)}x.txt`);
      expect(await underAttack(send([headerLine], body.join('\r\n')))).toMatch(/^250 /);
      const [exeHeader, , ...exeBody] = part(`invoice${'. '.repeat(30_000)}x.exe. . .`);
      expect(await underAttack(send([exeHeader], exeBody.join('\r\n')))).toBe(
        '550 5.7.1 Attachment type .exe not allowed for client app',
      );
    });

    test.each<[string, () => string]>([
      ['8 MB without a line break', () => 'x'.repeat(8 << 20)],
      ['4 MB of spaces and tabs on one line', () => `a${' \t'.repeat(2 << 20)}b`],
    ])('a body of %s is DKIM-signed in one pass', async (_name, body) => {
      expect(await underAttack(send(['Subject: one long line'], body()))).toMatch(/^250 /);
    });

    test('MIME nested 5,000 levels deep is refused as uninspectable', async () => {
      let body = '';
      for (let i = 0; i < 5000; i++) body += `--b${i}\r\nContent-Type: multipart/mixed; boundary="b${i + 1}"\r\n\r\n`;
      body += '--b5000\r\nContent-Type: text/plain\r\n\r\nhi\r\n';
      for (let i = 5000; i >= 0; i--) body += `--b${i}--\r\n`;
      const reply = await underAttack(send(['Content-Type: multipart/mixed; boundary="b0"'], body));
      expect(reply).toMatch(/^550 5\.7\.1 Message cannot be checked for blocked attachments/);
    });

    /** A multipart/mixed message whose second part is `part` (its header lines, a blank line, its body). */
    const withPart = (part: string) =>
      send(['Content-Type: multipart/mixed; boundary="b"'], `--b\r\n\r\nhi\r\n--b\r\n${part}\r\n--b--\r\n`);
    const uninspectable = /^550 5\.7\.1 Message cannot be checked for blocked attachments/;

    test.each<[string, () => string]>([
      [
        'a part\'s Content-Transfer-Encoding of 1 MB of "("',
        () => `Content-Transfer-Encoding: base64 ${'('.repeat(1 << 20)}\r\n\r\nAAAA`,
      ],
      ['a part header of 900 KB of folded fields', () => `${'X-A: a\r\n b\r\n'.repeat(90_000)}\r\nAAAA`],
      [
        'an attached message (base64) whose header holds 1 MB of bare CRs',
        () => {
          const crs = Buffer.alloc(1 << 20, 0x0d);
          const embedded = Buffer.concat([Buffer.from('Subject: a'), crs, Buffer.from('b\r\n\r\nhi\r\n')]);
          const encoded = embedded.toString('base64').replace(/.{76}/g, '$&\r\n');
          return `Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n${encoded}`;
        },
      ],
    ])('input the MIME library parses in quadratic time is refused as uninspectable: %s', async (_name, part) => {
      expect(await underAttack(withPart(part()))).toMatch(uninspectable);
    });

    test('10,000 pipelined RCPT: at most 1000 taken, every one answered', async () => {
      const replies = await underAttack(async (client) => {
        const recipients = Array.from({ length: 10_000 }, (_, i) =>
          i % 10 === 9 ? `x${i}@competitor.example` : `user${i}@example.com`,
        );
        client.write(`MAIL FROM:<app@corp.example>\r\n${recipients.map((to) => `RCPT TO:<${to}>\r\n`).join('')}`);
        const answers: string[] = [];
        for (let i = 0; i <= recipients.length; i++) answers.push((await client.reply()) ?? 'closed');
        expect(await client.command('RSET')).toMatch(/^250 /);
        return answers;
      });
      expect(replies[0]).toMatch(/^250 /);
      const rcpt = replies.slice(1);
      expect(rcpt).toHaveLength(10_000);
      expect(rcpt.filter((reply) => reply.startsWith('250 '))).toHaveLength(1000);
      expect(rcpt.filter((reply) => reply.startsWith('550 5.7.1 Recipient')).length).toBeGreaterThanOrEqual(111);
      expect(rcpt.every((reply) => /^(250|452|550) /.test(reply))).toBe(true);
    });

    test('smtp-server bounds envelope addresses (253 characters); one at the bound is judged as others', async () => {
      const longest = `${'a'.repeat(253 - '@corp.example'.length)}@corp.example`;
      expect(await underAttack((client) => client.sendMessage(longest, ['user@example.com'], mail([])))).toMatch(
        /^250 /,
      );
      expect(await underAttack((client) => client.command(`MAIL FROM:<${'a'.repeat(16_000)}@corp.example>`))).toBe(
        '501 Error: Bad sender address syntax',
      );
    });
  });
});
