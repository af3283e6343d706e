import { hashPassword } from '../src/ingress/password';
import { makeCertificate, metricsText, metricValue, relayPerDescribe, waitFor } from './helpers/harness';
import { message, openSession, openTlsSession, plainAuth, type RawSmtpClient } from './helpers/smtp-client';

/**
 * Attack: AUTH from many strangers at once starves everybody's disk I/O.
 *
 * Every password check is an scrypt run (~30-50 ms, 16 MiB) on libuv's thread pool, four threads by
 * default, the same pool that serves every fs call of the relay: the free-space check at MAIL FROM
 * (statfs), the spool file's open/write/fsync/rename at the end of DATA. The AUTH budgets bound
 * checks per address and per username, not across addresses: from 100 addresses × 10 connections
 * with made-up usernames, ~1000 scrypt runs queued ahead of a trusted client's fs calls, whose MAIL
 * was answered at 7.2 s and its 250 at 22 s.
 *
 * Now a relay-wide gate (`limits.password_checks`) runs at most `concurrent` checks at once and lets
 * the rest wait in a bounded line, trusted addresses first; a full line answers 454 4.7.0, and a
 * waiting check whose client left is dropped. The storm here is small (40 strangers, one AUTH each,
 * one check at a time) but long enough to measure against: while its checks run one after another
 * (~1.5 s of them), a trusted client's message gets its 250 and a trusted AUTH its 235 with most of
 * the storm still unanswered. Without the gate every check is on the thread pool at once, and the
 * bystander's fs calls come after nearly all of them.
 */
jest.setTimeout(60_000);

const STRANGERS = 40;
const RIGHT = 'the right one';

describe('attack: AUTH storm from many strangers', () => {
  const t = relayPerDescribe(async (dir) => ({
    tls: makeCertificate(dir),
    listeners: [{ name: 'submission', address: '127.0.0.1:0', tls: 'starttls', auth: 'optional' }],
    clients: [
      { name: 'lan', networks: ['127.0.0.1/32'] },
      { name: 'shop', username: 'shop', password_hash: await hashPassword(RIGHT) },
    ],
    // One check at a time, 60 places in line of which strangers may take 30: of 40 strangers' AUTHs,
    // one runs, 30 wait, and 9 find the line full.
    limits: { password_checks: { concurrent: 1, queue: 60 } },
  }));

  const metric = async (sample: string) => metricValue(await metricsText(t.running.httpPort), sample) ?? 0;

  function tlsSession(localAddress: string): Promise<RawSmtpClient> {
    return openTlsSession(t.running.portOf('submission'), { localAddress });
  }

  test("a trusted client's 250 and a trusted AUTH's 235 do not wait for 40 strangers' wrong AUTHs", async () => {
    const strangers: RawSmtpClient[] = [];
    for (let i = 0; i < STRANGERS; i++) strangers.push(await tlsSession(`127.0.1.${i + 1}`));
    const trustedAuth = await tlsSession('127.0.0.1');
    const { client: bystander } = await openSession(t.running.portOf('submission'), { localAddress: '127.0.0.1' });
    const failuresBefore = await metric('smarthop_auth_attempts_total{result="failure"}');

    /** Each stranger's reply, by stranger, and all replies in the order they came. */
    const byStranger: (string | undefined)[] = strangers.map(() => undefined);
    const replies: string[] = [];
    const answered = strangers.map(async (client, i) => {
      client.write(`${plainAuth(`guess-${i}@made-up.example`, 'wrong')}\r\n`);
      const reply = (await client.reply(30_000).catch(() => null)) ?? 'closed';
      byStranger[i] = reply;
      replies.push(reply);
      return reply;
    });
    // The storm is under way: its first check was answered, and checks wait in line.
    await waitFor(() => replies.some((reply) => reply.startsWith('535')), 30_000, 'the first checked AUTH');
    const waiting = () => metric('smarthop_password_checks{state="waiting"}');
    await waitFor(async () => (await waiting()) >= 20, 10_000, 'the line of checks');

    const body = message({ subject: 'during the storm' });
    const mail = await bystander.sendMessage('app@corp.example', ['user@example.com'], body);
    const unansweredAtMail = STRANGERS - replies.length;
    const auth = await trustedAuth.command(plainAuth('shop', RIGHT));
    const unansweredAtAuth = STRANGERS - replies.length;
    expect(mail).toMatch(/^250 2\.0\.0 Ok: queued/);
    expect(auth).toMatch(/^235 /);
    // Most of the storm was still waiting for its checks when the trusted client's replies came.
    expect(unansweredAtMail).toBeGreaterThanOrEqual(10);
    expect(unansweredAtAuth).toBeGreaterThanOrEqual(10);

    // Ten strangers whose checks still wait leave: those checks are dropped, not run.
    const leaving = strangers.filter((_, i) => byStranger[i] === undefined).slice(-10);
    expect(leaving).toHaveLength(10);
    for (const client of leaving) client.destroy();
    const codes = (await Promise.all(answered)).map((reply) => reply.slice(0, 3));
    const running = () => metric('smarthop_password_checks{state="running"}');
    await waitFor(async () => (await running()) === 0, 10_000, 'the last check');
    expect(await waiting()).toBe(0);

    // The line had room for 30 strangers: the others were told to come back, without a check.
    const busy = replies.filter((reply) => reply.startsWith('454'));
    expect(busy.length).toBeGreaterThanOrEqual(1);
    expect(new Set(busy)).toEqual(new Set(['454 4.7.0 Too many authentications in progress; try again later']));
    expect(await metric('smarthop_rate_limited_total{client="(unknown)",limit="auth_busy"}')).toBe(busy.length);
    // Checked: every 535, and at most a few of the ten that left (one whose check had just begun).
    const checked = (await metric('smarthop_auth_attempts_total{result="failure"}')) - failuresBefore;
    const wrong = codes.filter((code) => code === '535').length;
    expect(checked).toBeGreaterThanOrEqual(wrong);
    expect(checked).toBeLessThanOrEqual(wrong + 5);
    expect(wrong + busy.length).toBeLessThanOrEqual(STRANGERS - 10);

    const staying = strangers.filter((client) => !leaving.includes(client));
    await Promise.all([...staying, trustedAuth, bystander].map((client) => client.quit()));
  });
});
