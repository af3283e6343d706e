import { randomBytes, scryptSync } from 'node:crypto';
import * as path from 'node:path';
import { hashPassword } from '../src/ingress/password';
import type { SmtpSink } from '../src/tools/sink';
import {
  baseConfig,
  buildConfig,
  freePort,
  makeCertificate,
  metricsText,
  metricValue,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  type RunningRelay,
} from './helpers/harness';
import { findBinary } from './helpers/prometheus';
import { TestRedis } from './helpers/redis';
import { testUnless } from './helpers/skip';
import { message, openTlsSession, plainAuth } from './helpers/smtp-client';

/**
 * The AUTH budgets against a hostile LAN (issue 20, finding 2), over STARTTLS with real concurrent
 * clients, with the counters in memory and in Redis (state.store: redis): however many AUTHs arrive
 * at once, an address gets at most limits.auth_failures.max password checks before its lockout, and
 * a username guessed from many addresses is slowed and then refused for a while, except from the
 * address its owner uses.
 */

const QUEUED = /^250 2\.0\.0 Ok: queued as /;

const password = 'correct horse battery staple';
/** Both relays' hashes, made once: a hash proves the same whichever relay checks it. */
const hashes = { light: '', real: '' };
beforeAll(async () => {
  hashes.light = lightHash(password);
  hashes.real = await hashPassword(password);
});

describe.each(['memory', 'redis'] as const)('AUTH budgets under concurrency, %s counters', (store) => {
  const REDIS = findBinary('redis-server');
  const skipped = store === 'redis' && !REDIS;
  const maybe = testUnless(skipped ? '`redis-server` is not on PATH (apt-get install redis-server)' : null);
  let dir = '';
  let sink: SmtpSink | undefined;
  let redis: TestRedis | undefined;
  let running: RunningRelay | undefined;

  beforeAll(async () => {
    if (skipped) return;
    dir = tempDir();
    sink = await startSink();
    if (store === 'redis' && REDIS) {
      redis = new TestRedis(REDIS, path.join(dir, 'redis'), await freePort());
      await redis.start();
    }
    running = await startRelay(
      buildConfig(
        baseConfig(dir, [{ name: 'primary', port: sink.port }], {
          tls: makeCertificate(dir),
          listeners: [
            {
              name: 'submission',
              address: '127.0.0.1:0',
              tls: 'starttls',
              require_tls: true,
              auth: 'required',
              identify_timeout: '2m',
            },
          ],
          clients: [
            // 160 checks of this one: a lighter scrypt (the parameters travel with the hash), or they take
            // tens of seconds on a loaded machine. The 190-AUTH race is run against the real cost.
            { name: 'webshop', username: 'webshop', password_hash: hashes.light },
            { name: 'billing', username: 'billing', password_hash: hashes.real },
          ],
          limits: {
            connections_per_stranger: 200,
            connection_rate_per_stranger: { window: '1m', max: 1000 },
            auth_failures: { max: 5, window: '1m', lockout: '1m', delay: '0s' },
            auth_failures_per_username: { slow_after: 40, max: 120, window: '1h', delay: '200ms' },
          },
          // A loaded machine can hold a Redis reply past the default 500 ms, and the relay would then
          // count on its local share: these tests are about the Redis store, so give it time.
          ...(redis
            ? { state: { store: 'redis', redis: { url: redis.url, command_timeout: '10s' }, fleet_size: 2 } }
            : {}),
        }),
        dir,
      ),
    );
  });

  afterAll(async () => {
    await running?.stop();
    await sink?.close();
    await redis?.stop();
    if (dir) removeDir(dir);
  });

  /** The counters stayed where the test put them: no fallback to local counters happened. */
  const noFallback = async () => {
    expect(await metric(`smarthop_state_backend{backend="${store}"}`)).toBe(1);
    expect(await metric('smarthop_state_fallbacks_total')).toBe(0);
  };
  const metric = async (sample: string) =>
    metricValue(await metricsText((running as RunningRelay).httpPort), sample) ?? 0;
  const checks = async () =>
    (await metric('smarthop_auth_attempts_total{result="success"}')) +
    (await metric('smarthop_auth_attempts_total{result="failure"}'));
  /** Connected, STARTTLS done and EHLO said: ready for AUTH. */
  const tlsSession = (localAddress: string) =>
    openTlsSession((running as RunningRelay).portOf('submission'), { localAddress });
  const inBatches = async <T>(count: number, make: (i: number) => Promise<T>): Promise<T[]> => {
    const made: T[] = [];
    for (let i = 0; i < count; i += 20)
      made.push(...(await Promise.all(Array.from({ length: Math.min(20, count - i) }, (_, j) => make(i + j)))));
    return made;
  };

  maybe(
    '190 AUTHs at once from one address: 5 (max) passwords checked; the right one, sent last, gets no 235',
    async () => {
      expect(await metric(`smarthop_state_backend{backend="${store}"}`)).toBe(1);
      const sessions = await inBatches(190, () => tlsSession('127.0.0.2'));
      const checksBefore = await checks();
      const guesses = sessions.slice(0, 189);
      for (const [i, client] of guesses.entries()) client.write(`${plainAuth('billing', `guess-${i}`)}\r\n`);
      const replies = guesses.map((client) => client.reply(30_000));
      // The right password goes out once the guesses are being answered, behind all of them.
      await Promise.race(replies);
      const right = sessions[189];
      const answers = [...(await Promise.all(replies)), await right.command(plainAuth('billing', password))];
      const codes = answers.map((reply) => reply?.slice(0, 3));
      expect(codes.filter((code) => code === '235')).toEqual([]);
      expect(codes.filter((code) => code === '535')).toHaveLength(4);
      expect(codes.filter((code) => code === '421')).toHaveLength(186);
      expect(answers[189]).toMatch(
        /^421 4\.7\.0 Too many failed authentications from \[127\.0\.0\.2\]; try again in \d+s$/,
      );
      expect((await checks()) - checksBefore).toBe(5);
      await Promise.all(sessions.map((client) => client.quit()));
      await noFallback();
    },
    90_000,
  );

  maybe(
    '40 addresses × 4 guesses at one username: slowed, then 454 4.7.0; its owner still gets in from its host',
    async () => {
      const usual = await tlsSession('127.0.0.9');
      expect(await usual.command(plainAuth('webshop', password))).toBe('235 Authentication successful');
      await usual.quit();

      const failuresBefore = await metric('smarthop_auth_attempts_total{result="failure"}');
      const attackers = await inBatches(40, (i) => tlsSession(`127.0.0.${10 + i}`));
      const answers = (
        await Promise.all(
          attackers.map(async (client, i) => {
            const mine: (string | null)[] = [];
            for (let guess = 0; guess < 4; guess++)
              mine.push(await client.command(plainAuth('webshop', `guess-${i}-${guess}`)));
            await client.quit();
            return mine;
          }),
        )
      ).flat();
      const refused = answers.filter((reply) => reply?.startsWith('454 '));
      expect(answers.filter((reply) => reply === '535 5.7.8 Authentication credentials invalid')).toHaveLength(120);
      expect(refused).toHaveLength(40);
      expect(refused[0]).toMatch(/^454 4\.7\.0 Too many failed authentications for this username; try again in \d+s$/);
      expect((await metric('smarthop_auth_attempts_total{result="failure"}')) - failuresBefore).toBe(120);
      // Every failure past the 40th was answered late (more may be: reservations still checking count too).
      expect(await metric('smarthop_auth_delayed_total{scope="username"}')).toBeGreaterThanOrEqual(80);
      expect(await metric('smarthop_rate_limited_total{client="(unknown)",limit="auth_username"}')).toBe(40);

      // The real user from its usual address is checked and let in; from a new address it is refused for now.
      const again = await tlsSession('127.0.0.9');
      expect(await again.command(plainAuth('webshop', password))).toBe('235 Authentication successful');
      expect(
        await again.sendMessage('shop@corp.example', ['user@example.com'], message({ subject: 'after the attack' })),
      ).toMatch(QUEUED);
      await again.quit();
      const elsewhere = await tlsSession('127.0.0.60');
      expect(await elsewhere.command(plainAuth('webshop', password))).toMatch(/^454 4\.7\.0 /);
      await elsewhere.quit();
      await noFallback();
    },
    90_000,
  );
});

/** An scrypt hash in the stored format with N = 1024 instead of 16384: the same check, a sixteenth of the work. */
function lightHash(password: string): string {
  const salt = randomBytes(16);
  const key = scryptSync(password, salt, 32, { N: 1024, r: 8, p: 1 });
  return `scrypt$1024$8$1$${salt.toString('base64')}$${key.toString('base64')}`;
}
