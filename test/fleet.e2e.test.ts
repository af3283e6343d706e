import { accessSync, constants, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import type { SmtpSink } from '../src/tools/sink';
import { ChildRelay } from './helpers/child-relay';
import { HaproxyBackend, TestHaproxy } from './helpers/haproxy';
import { freePort, metricsText, metricValue, removeDir, startSink, tempDir, waitFor } from './helpers/harness';
import { findBinary } from './helpers/prometheus';
import { TestRedis } from './helpers/redis';
import { testUnless } from './helpers/skip';
import { message, openSession, RawSmtpClient } from './helpers/smtp-client';

/**
 * Fleet mode with real components: two relay processes (the built CLI) sharing one redis-server,
 * behind a real HAProxy sending PROXY protocol v1, delivering into one sink. Client addresses are
 * loopback aliases: 127.0.0.1 (HAProxy's own source address) is deliberately nobody's network.
 */

const REDIS = findBinary('redis-server');
// Debian installs haproxy in /usr/sbin, which a developer's PATH may lack.
const HAPROXY = findBinary('haproxy') ?? executable('/usr/sbin/haproxy');
const missing = [...(REDIS ? [] : ['redis-server']), ...(HAPROXY ? [] : ['haproxy'])];

// Child processes, a Redis restart and a drain on a shared 2-core machine: be generous.
jest.setTimeout(120_000);

const LIMITED = '127.0.0.3';
const QUOTA = '127.0.0.4';
const PROXIED = '127.0.0.5';
const OUTAGE = '127.0.0.6';
const STRANGER = '127.0.0.2';

function executable(file: string): string | null {
  try {
    accessSync(file, constants.X_OK);
    return file;
  } catch {
    return null;
  }
}

interface Node {
  name: string;
  configFile: string;
  lbPort: number;
  directPort: number;
  httpPort: number;
  relay: ChildRelay | null;
}

function nodeConfig(dir: string, node: Node, sinkPort: number, redisUrl: string): Record<string, unknown> {
  return {
    hostname: `${node.name}.test`,
    shutdown_grace: '5s',
    spool: {
      dir: path.join(dir, node.name, 'spool'),
      retry: { initial: '200ms', max: '1s', factor: 2 },
      min_free_disk: 0,
    },
    listeners: [
      { name: 'lb', address: `127.0.0.1:${node.lbPort}`, proxy_protocol: true, trusted_proxies: ['127.0.0.1/32'] },
      { name: 'direct', address: `127.0.0.1:${node.directPort}` },
    ],
    clients: [
      { name: 'limited', networks: [`${LIMITED}/32`], policy: 'five_a_minute' },
      { name: 'quota', networks: [`${QUOTA}/32`], policy: 'through_quota' },
      { name: 'proxied', networks: [`${PROXIED}/32`] },
      { name: 'outage', networks: [`${OUTAGE}/32`], policy: 'four_a_minute' },
    ],
    policies: {
      five_a_minute: { rate_limits: [{ window: '1m', messages: 5 }] },
      four_a_minute: { rate_limits: [{ window: '1m', messages: 4 }] },
      through_quota: { route: 'quota' },
    },
    routes: { default: { smarthosts: ['sink'] }, quota: { smarthosts: ['quota_sink'] } },
    smarthosts: [
      { name: 'sink', host: '127.0.0.1', port: sinkPort, tls: 'none', connect_timeout: '2s', socket_timeout: '10s' },
      {
        name: 'quota_sink',
        host: '127.0.0.1',
        port: sinkPort,
        tls: 'none',
        connect_timeout: '2s',
        socket_timeout: '10s',
        rate_limits: [{ window: '1h', messages: 4 }],
      },
    ],
    http: { address: `127.0.0.1:${node.httpPort}` },
    log: { level: 'info' },
    state: { store: 'redis', redis: { url: redisUrl, key_prefix: 'fleet-test:' }, fleet_size: 2 },
  };
}

/** One message on its own connection from `localAddress`; the reply to the end of DATA (or the first refusal). */
async function sendOne(
  port: number,
  localAddress: string,
  subject: string,
  messageId?: string,
): Promise<string | null> {
  const { client, greeting } = await openSession(port, { localAddress });
  try {
    if (!greeting?.startsWith('220')) return greeting;
    return await client.sendMessage('app@corp.example', ['user@example.com'], message({ subject, messageId }));
  } finally {
    await client.quit();
  }
}

function code(reply: string | null): string {
  return reply === null ? 'closed' : reply.slice(0, 3);
}

async function metric(node: Node, sample: string): Promise<number> {
  return metricValue(await metricsText(node.httpPort), sample) ?? Number.NaN;
}

describe('a fleet of two relays sharing Redis behind HAProxy', () => {
  if (missing.length > 0 && process.env.CI) {
    test('redis-server and haproxy are installed in CI', () => {
      throw new Error(
        `CI is set but ${missing.join(' and ')} not on PATH: ` +
          '.ci/run must install the Debian packages redis-server and haproxy',
      );
    });
    return;
  }
  const maybe = testUnless(
    missing.length === 0
      ? null
      : `${missing.join(' and ')} not on PATH (apt-get install redis-server haproxy); CI must have them`,
  );

  let dir: string;
  let redis: TestRedis;
  let haproxy: TestHaproxy;
  let sink: SmtpSink;
  const nodes: Node[] = [];

  const subjects = (prefix: string) => sink.messages.filter((m) => m.data.toString().includes(`Subject: ${prefix}`));

  beforeAll(async () => {
    if (missing.length > 0 || !REDIS || !HAPROXY) return;
    dir = tempDir('smarthop-fleet-');
    redis = new TestRedis(REDIS, path.join(dir, 'redis'), await freePort());
    await redis.start();
    sink = await startSink();
    for (const name of ['node-a', 'node-b']) {
      const node: Node = {
        name,
        configFile: path.join(dir, `${name}.yaml`),
        lbPort: await freePort(),
        directPort: await freePort(),
        httpPort: await freePort(),
        relay: null,
      };
      writeFileSync(node.configFile, stringify(nodeConfig(dir, node, sink.port, redis.url)));
      nodes.push(node);
    }
    await Promise.all(
      nodes.map(async (node) => {
        node.relay = await ChildRelay.start(node.configFile, node.httpPort);
      }),
    );
    const backends: HaproxyBackend[] = nodes.map((node) => ({
      name: node.name,
      smtpPort: node.lbPort,
      httpPort: node.httpPort,
    }));
    haproxy = await TestHaproxy.start(HAPROXY, dir, await freePort(), backends);
  });

  afterAll(async () => {
    await haproxy?.stop();
    await Promise.all(nodes.map((node) => node.relay?.kill('SIGKILL')));
    await sink?.close();
    await redis?.stop();
    if (dir) removeDir(dir);
  });

  maybe('both nodes report Redis as their state backend', async () => {
    for (const node of nodes) {
      await waitFor(
        async () => (await metric(node, 'smarthop_state_backend{backend="redis"}')) === 1,
        20_000,
        `${node.name} on redis`,
      );
      expect(await metric(node, 'smarthop_state_fallbacks_total')).toBe(0);
    }
  });

  maybe('a client limited to 5 messages a minute gets 5 across both nodes together, not 10', async () => {
    const replies: string[] = [];
    for (let i = 0; i < 12; i++) replies.push(code(await sendOne(nodes[i % 2].directPort, LIMITED, `limited-${i}`)));
    expect(replies.filter((c) => c === '250')).toHaveLength(5);
    expect(replies.slice(5)).toEqual(Array(7).fill('451'));
    // Each node refused on the fleet's count, and says so in its own metrics.
    for (const node of nodes)
      expect(await metric(node, 'smarthop_rate_limited_total{client="limited",limit="messages_1m"}')).toBeGreaterThan(
        0,
      );
  });

  maybe("a smart host's quota (4 messages an hour) is shared: 4 delivered by the fleet, the rest wait", async () => {
    for (let i = 0; i < 8; i++) expect(code(await sendOne(nodes[i % 2].directPort, QUOTA, `quota-${i}`))).toBe('250');
    const waiting = async () => {
      let queued = 0;
      for (const node of nodes) {
        const text = await metricsText(node.httpPort);
        queued +=
          (metricValue(text, 'smarthop_queue_messages{state="ready"}') ?? 0) +
          (metricValue(text, 'smarthop_queue_messages{state="deferred"}') ?? 0);
      }
      return queued;
    };
    // Unshared, each node would deliver 4 (8 in all) and keep none queued.
    await waitFor(
      async () => subjects('quota-').length === 4 && (await waiting()) === 4,
      30_000,
      '4 quota messages delivered and 4 waiting',
    );
    for (const node of nodes) {
      expect(
        await metric(node, 'smarthop_smarthost_quota_remaining{smarthost="quota_sink",window="1h",unit="messages"}'),
      ).toBe(0);
    }
    expect(subjects('quota-')).toHaveLength(4);
  });

  maybe('through HAProxy (send-proxy) a network client is recognised by its real address', async () => {
    const replies = [];
    for (let i = 0; i < 4; i++) replies.push(code(await sendOne(haproxy.port, PROXIED, `proxied-${i}`)));
    expect(replies).toEqual(['250', '250', '250', '250']);
    let received = 0;
    for (const node of nodes) received += await metric(node, 'smarthop_messages_received_total{client="proxied"}');
    expect(received).toBe(4);
    // Round robin: both nodes took some, each logging the client's own address, not HAProxy's.
    for (const node of nodes) expect(node.relay?.output.join('')).toContain(`client=proxied[${PROXIED}]`);
    await waitFor(() => subjects('proxied-').length === 4, 20_000, 'the proxied messages at the sink');
  });

  maybe('a direct connection to the PROXY listener is refused, forged header or not', async () => {
    const forged = await RawSmtpClient.connect(nodes[0].lbPort, { localAddress: STRANGER });
    // Claims to be a trusted client; sent at once, as a proxy would, before any greeting.
    forged.write(`PROXY TCP4 ${PROXIED} 127.0.0.1 40000 25\r\n`);
    expect(await forged.reply()).toBe(`554 5.7.1 Access denied: [${STRANGER}] is not a trusted proxy of listener lb`);
    expect(await forged.reply()).toBeNull();
    forged.destroy();

    const direct = await RawSmtpClient.connect(nodes[1].lbPort, { localAddress: PROXIED });
    expect(await direct.reply()).toBe(`554 5.7.1 Access denied: [${PROXIED}] is not a trusted proxy of listener lb`);
    direct.destroy();
    expect(
      await metric(nodes[0], 'smarthop_messages_rejected_total{client="(unknown)",reason="access_denied"}'),
    ).toBeGreaterThan(0);
  });

  maybe(
    'Redis stopped mid-traffic: mail flows under local limits (4/2 = 2 per node), the metric says so, ' +
      'and fleet limits return with Redis',
    async () => {
      const [a, b] = nodes;
      await redis.stop();
      const during = [];
      for (let i = 0; i < 3; i++) during.push(await sendOne(a.directPort, OUTAGE, `outage-${i}`));
      expect(during.map(code)).toEqual(['250', '250', '451']);
      // The reply names the limit that refused it: this node's share, not the fleet's 4.
      expect(during[2]).toMatch(
        new RegExp(
          /^451 4\.7\.1 Rate limit for client outage: 2 of the fleet's 4 messages per 1m on this relay /.source +
            /while shared limits are unreachable; try again in \d+s$/.source,
        ),
      );
      expect(await metric(a, 'smarthop_state_backend{backend="local_fallback"}')).toBe(1);
      expect(await metric(a, 'smarthop_state_fallbacks_total')).toBe(1);
      expect(a.relay?.output.join('')).toContain('unreachable');
      await waitFor(() => subjects('outage-').length === 2, 20_000, 'mail accepted during the outage to be delivered');

      await redis.start();
      for (const node of nodes) {
        await waitFor(
          async () => (await metric(node, 'smarthop_state_backend{backend="redis"}')) === 1,
          30_000,
          `${node.name} back on redis`,
        );
      }
      expect(a.relay?.output.join('')).toContain('fleet-wide again');
      // Node A's local window is full (local counting would refuse at once), node B's is empty (local
      // counting would give it 2): 3 on A and then 1 on B is the fleet's limit of 4 in a fresh Redis.
      const after = [];
      for (let i = 0; i < 3; i++) after.push(code(await sendOne(a.directPort, OUTAGE, `after-${i}`)));
      let lastReply: string | null = null;
      for (let i = 3; i < 5; i++) {
        lastReply = await sendOne(b.directPort, OUTAGE, `after-${i}`);
        after.push(code(lastReply));
      }
      expect(after).toEqual(['250', '250', '250', '250', '451']);
      expect(lastReply).toMatch(/^451 4\.7\.1 Rate limit for client outage: 4 messages per 1m; try again in \d+s$/);
    },
  );

  maybe('draining one node with SIGTERM under load through HAProxy loses no message', async () => {
    const total = 30;
    const ids = Array.from(
      { length: total },
      (_, i) => `drain-${i}-${Math.random().toString(36).slice(2)}@corp.example`,
    );
    const accepted = new Set<string>();
    let next = 0;
    let drained: Promise<number | null> | null = null;
    const worker = async () => {
      while (next < total) {
        const id = ids[next++];
        // A legacy app's MTA retries a 4xx or a dropped connection; the test gives it plenty of tries.
        for (let attempt = 0; attempt < 40 && !accepted.has(id); attempt++) {
          const reply = await sendOne(haproxy.port, PROXIED, 'drain', id).catch(() => null);
          if (reply?.startsWith('250')) accepted.add(id);
          else if (reply?.startsWith('5')) throw new Error(`permanent refusal while draining: ${reply}`);
          else await new Promise((resolve) => setTimeout(resolve, 100));
        }
        if (accepted.size >= 8 && !drained) drained = nodes[0].relay?.kill('SIGTERM') ?? null;
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    expect(accepted.size).toBe(total);
    expect(await drained).toBe(0);
    // Whatever node A had queued when it stopped is on its disk: its next start delivers it.
    nodes[0].relay = await ChildRelay.start(nodes[0].configFile, nodes[0].httpPort);
    const arrived = () => new Set(sink.messages.map((m) => m.messageId));
    await waitFor(() => ids.every((id) => arrived().has(`<${id}>`)), 30_000, 'every accepted message at the sink');
  });
});
