import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { formatPath, loadConfigFile, parseConfig } from '../src/config/load';
import { parseDuration, parseHostPort, parseSize } from '../src/config/units';
import { ADDRESS_MEMO_LIMIT, ClientDirectory } from '../src/ingress/clients';
import { verifyPassword } from '../src/ingress/password';
import { CLI } from './helpers/child-relay';
import { removeDir, tempDir } from './helpers/temp-dir';

const ROOT = path.resolve(__dirname, '..');

function minimal(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hostname: 'relay.test',
    spool: { dir: './spool' },
    listeners: [{ name: 'smtp', address: '127.0.0.1:2525' }],
    clients: [{ name: 'lan', networks: ['10.0.0.0/8'] }],
    routes: { default: { smarthosts: ['primary'] } },
    smarthosts: [{ name: 'primary', host: 'smtp.example', port: 587 }],
    ...overrides,
  };
}

describe('units', () => {
  test.each([
    ['25MiB', 25 * 1024 * 1024],
    ['512KiB', 512 * 1024],
    ['1024', 1024],
    [2048, 2048],
    ['10MB', 10_000_000],
    ['1.5GiB', 1.5 * 1024 ** 3],
  ])('size %p = %p bytes', (input, bytes) => expect(parseSize(input)).toBe(bytes));
  test.each(['ten', '10XB', '-1', ''])('size %p is refused', (input) => expect(parseSize(input)).toBeUndefined());
  test.each([
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['5d', 432_000_000],
    ['250ms', 250],
    [45, 45_000],
  ])('duration %p = %p ms', (input, ms) => expect(parseDuration(input)).toBe(ms));
  test.each(['soon', '5w', '-3s'])('duration %p is refused', (input) => expect(parseDuration(input)).toBeUndefined());
  test('host:port and [v6]:port', () => {
    expect(parseHostPort('127.0.0.1:2525')).toEqual({ host: '127.0.0.1', port: 2525 });
    expect(parseHostPort('[::1]:2525')).toEqual({ host: '::1', port: 2525 });
    expect(parseHostPort('::1:2525')).toBeUndefined();
    expect(parseHostPort('host:99999')).toBeUndefined();
  });
});

describe('config contract', () => {
  test('a minimal config gets the documented defaults and relative paths resolve against the config file', () => {
    const result = parseConfig(minimal(), '/etc/smarthop', {});
    if (!result.ok) throw new Error(result.errors.join('\n'));
    const { config } = result;
    expect(config.spool.dir).toBe('/etc/smarthop/spool');
    expect(config.max_message_size).toBe(25 * 1024 * 1024);
    expect(config.spool.retry).toEqual({ initial: 30_000, max: 3_600_000, factor: 2 });
    expect(config.listeners[0]).toMatchObject({
      tls: 'none',
      auth: 'optional',
      line_endings: 'normalize',
      allow_insecure_auth: false,
    });
    expect(config.smarthosts[0]).toMatchObject({ tls: 'starttls', tls_verify: true, priority: 10, weight: 1 });
  });

  test('${ENV} and ${ENV:-default} are taken from the environment; a whole-value reference keeps its YAML type', () => {
    const raw = minimal({
      hostname: '${RELAY_NAME:-fallback.example}',
      smarthosts: [
        {
          name: 'primary',
          host: '${SMART_HOST}',
          port: '${SMART_PORT:-587}',
          auth: { user: '${SMART_USER}', pass: 'p-${SMART_PASS}' },
        },
      ],
    });
    const result = parseConfig(raw, '/etc', {
      SMART_HOST: 'smtp.ses.example',
      SMART_USER: 'AKIA',
      SMART_PASS: 's#cr:t',
    });
    if (!result.ok) throw new Error(result.errors.join('\n'));
    expect(result.config.hostname).toBe('fallback.example');
    expect(result.config.smarthosts[0]).toMatchObject({
      host: 'smtp.ses.example',
      port: 587,
      auth: { user: 'AKIA', pass: 'p-s#cr:t' },
    });
  });

  test('every error is reported with its path in bracket form', () => {
    const raw = minimal({
      max_message_size: 'huge',
      listeners: [{ name: 'smtp', address: 'localhost', tls: 'starttls' }],
      clients: [
        { name: 'lan', networks: ['10.0.0.0/33'] },
        { name: 'webshop', username: 'webshop', password_hash: 'hunter2', policy: 'missing' },
      ],
      routes: { default: { smarthosts: ['primary', 'ghost'] } },
      smarthosts: [{ name: 'primary', host: '${UNSET_HOST}', port: 587, tls: 'sometimes' }],
      surprise: true,
    });
    const result = parseConfig(raw, '/etc', {});
    expect(result.ok).toBe(false);
    const errors = result.ok ? [] : result.errors;
    const expected = [
      /^smarthosts\[0\]\.host: environment variable UNSET_HOST is not set/,
      /^max_message_size: expected a size like 25MiB/,
      /^listeners\[0\]\.address: expected host:port/,
      /^clients\[0\]\.networks\[0\]: expected a CIDR/,
      /^clients\[1\]\.password_hash: expected scrypt hash, got plain text/,
      /^smarthosts\[0\]\.tls: /,
      /^\(root\): Unrecognized key: "surprise"|surprise/,
    ];
    for (const pattern of expected) expect(errors.some((e) => pattern.test(e))).toBe(true);
  });

  test('cross-references are checked: policies, routes, smart hosts, TLS material, duplicate names', () => {
    const raw = minimal({
      listeners: [
        { name: 'sub', address: '0.0.0.0:587', tls: 'starttls' },
        { name: 'sub', address: '0.0.0.0:588' },
      ],
      clients: [{ name: 'app', username: 'app', password_hash: 'scrypt$16384$8$1$c2FsdA==$a2V5', policy: 'nope' }],
      routes: { other: { smarthosts: ['ghost'] } },
    });
    const result = parseConfig(raw, '/etc', {});
    const errors = result.ok ? [] : result.errors;
    expect(errors).toEqual(
      expect.arrayContaining([
        'listeners[0].tls: tls: starttls needs the top-level tls.cert and tls.key',
        'listeners[1].name: duplicate name "sub" (also listeners[0])',
        'clients[0].policy: no policy named "nope" under policies',
        'routes.other.smarthosts[0]: no smart host named "ghost" under smarthosts',
      ]),
    );
  });

  test('smart-host and listener keys of issue 5: defaults, relative ca, oauth2 and quotas', () => {
    const result = parseConfig(
      minimal({
        listeners: [{ name: 'smtp', address: '127.0.0.1:2525', delivery: 'inline', inline_timeout: '3s' }],
        bounce_copy_to: 'postmaster@corp.example',
        smarthosts: [
          {
            name: 'primary',
            host: 'smtp.example',
            port: 587,
            ca: './ca.pem',
            rate_limits: [
              { window: '1m', messages: 30 },
              { window: '1d', recipients: 10000 },
            ],
            breaker: { failures: 5 },
          },
          {
            name: 'm365',
            host: 'smtp.office365.com',
            port: 587,
            auth: {
              type: 'oauth2',
              user: 'relay@corp.example',
              token_url: 'https://login.microsoftonline.com/t/oauth2/v2.0/token',
              client_id: 'id',
              client_secret: '${SECRET}',
              scope: 'https://outlook.office365.com/.default',
            },
          },
        ],
      }),
      '/etc/smarthop',
      { SECRET: 'shh' },
    );
    if (!result.ok) throw new Error(result.errors.join('\n'));
    const { config } = result;
    expect(config.listeners[0]).toMatchObject({ delivery: 'inline', inline_timeout: 3000 });
    expect(config.bounce_copy_to).toBe('postmaster@corp.example');
    expect(config.smarthosts[0]).toMatchObject({
      ca: '/etc/smarthop/ca.pem',
      rate_limits: [
        { window: 60_000, messages: 30 },
        { window: 86_400_000, recipients: 10_000 },
      ],
      breaker: { failures: 5, cooldown: 30_000 },
    });
    expect(config.smarthosts[1].ca).toBeUndefined();
    expect(config.smarthosts[1]).toMatchObject({
      rate_limits: [],
      breaker: { failures: 3, cooldown: 30_000 },
      auth: { type: 'oauth2', client_secret: 'shh' },
    });
    const defaults = parseConfig(minimal(), '/etc', {});
    expect(defaults.ok && defaults.config.listeners[0]).toMatchObject({ delivery: 'queue', inline_timeout: 5000 });
  });

  test('smart-host mistakes are refused with their path', () => {
    const shape = parseConfig(
      minimal({
        listeners: [{ name: 'smtp', address: '127.0.0.1:2525', delivery: 'sometimes' }],
        bounce_copy_to: 'postmaster',
        smarthosts: [
          { name: 'primary', host: 'smtp.example', port: 587, rate_limits: [{ window: '1m' }] },
          {
            name: 'm365',
            host: 'smtp.example',
            port: 587,
            auth: { type: 'oauth2', user: 'u', token_url: 'ftp://x', client_id: 'id', client_secret: 's' },
          },
        ],
      }),
      '/etc',
      {},
    );
    expect(shape.ok ? [] : shape.errors).toEqual([
      'listeners[0].delivery: Invalid option: expected one of "queue"|"inline"',
      'bounce_copy_to: expected an email address',
      'smarthosts[0].rate_limits[0]: a rate limit needs messages, recipients, or both',
      'smarthosts[1].auth.token_url: expected an http(s) URL of the OAuth2 token endpoint',
    ]);
    // Checks across keys run once every value has its shape.
    const across = parseConfig(
      minimal({
        routes: { default: { smarthosts: ['primary', 'm365'] } },
        smarthosts: [
          {
            name: 'primary',
            host: 'smtp.example',
            port: 587,
            tls: 'none',
            ca: './ca.pem',
            rate_limits: [
              { window: '60s', messages: 1 },
              { window: '1m', messages: 2, recipients: 9 },
            ],
          },
          {
            name: 'm365',
            host: 'smtp.example',
            port: 25,
            tls: 'none',
            auth: {
              type: 'oauth2',
              user: 'u',
              token_url: 'https://login.example/token',
              client_id: 'id',
              client_secret: 's',
            },
          },
        ],
      }),
      '/etc',
      {},
    );
    expect(across.ok ? [] : across.errors).toEqual([
      'smarthosts[0].ca: only meaningful with tls: starttls or implicit',
      'smarthosts[0].rate_limits[1]: a second messages limit for the same window',
      'smarthosts[1].auth: an OAuth2 token must not travel in clear: use tls: starttls or implicit',
    ]);
  });

  test('type: graph (issue 25): defaults from tenant and Graph URL, SMTP hosts unchanged', () => {
    const result = parseConfig(
      minimal({
        routes: { default: { smarthosts: ['m365', 'primary'] } },
        smarthosts: [
          {
            name: 'm365',
            type: 'graph',
            tenant: 'contoso.onmicrosoft.com',
            client_id: 'app',
            client_secret: '${SECRET}',
            mailbox: 'relay@corp.example',
          },
          { name: 'primary', host: 'smtp.example', port: 587 },
          {
            name: 'gov',
            type: 'graph',
            tenant: '00000000-0000-0000-0000-000000000001',
            client_id: 'app',
            certificate: { cert: './m365.crt', key: './m365.key' },
            send_as: 'from',
            token_url: 'https://login.microsoftonline.us/t/oauth2/v2.0/token',
            graph_url: 'https://graph.microsoft.us/v1.0/',
            max_message_size: '25MiB',
          },
        ],
      }),
      '/etc/smarthop',
      { SECRET: 'shh' },
    );
    if (!result.ok) throw new Error(result.errors.join('\n'));
    const [m365, primary, gov] = result.config.smarthosts;
    expect(m365).toEqual({
      type: 'graph',
      name: 'm365',
      tenant: 'contoso.onmicrosoft.com',
      client_id: 'app',
      client_secret: 'shh',
      mailbox: 'relay@corp.example',
      send_as: 'mailbox',
      token_url: 'https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token',
      graph_url: 'https://graph.microsoft.com/v1.0',
      scope: 'https://graph.microsoft.com/.default',
      host: 'graph.microsoft.com',
      max_message_size: 36_700_160,
      max_connections: 4,
      max_recipients: 500,
      tls_verify: true,
      priority: 10,
      weight: 1,
      connect_timeout: 10_000,
      socket_timeout: 60_000,
      rate_limits: [],
      breaker: { failures: 3, cooldown: 30_000 },
    });
    expect(primary).toMatchObject({
      type: 'smtp',
      host: 'smtp.example',
      port: 587,
      tls: 'starttls',
      max_recipients: 50,
    });
    expect(gov).toMatchObject({
      certificate: { cert: '/etc/smarthop/m365.crt', key: '/etc/smarthop/m365.key' },
      send_as: 'from',
      graph_url: 'https://graph.microsoft.us/v1.0',
      scope: 'https://graph.microsoft.us/.default',
      host: 'graph.microsoft.us',
      max_message_size: 25 * 1024 * 1024,
    });
  });

  test('type: graph mistakes are refused with their path', () => {
    const noCredential = { name: 'a', type: 'graph', tenant: 't.example', client_id: 'app', mailbox: 'r@corp.example' };
    const certificate = { cert: 'c', key: 'k' };
    const bothCredentials = { ...noCredential, name: 'b', mailbox: undefined, client_secret: 's', certificate };
    const result = parseConfig(
      minimal({
        routes: { default: { smarthosts: ['a', 'b', 'c', 'd'] } },
        smarthosts: [
          noCredential,
          bothCredentials,
          {
            name: 'c',
            type: 'graph',
            tenant: 'bad tenant/',
            client_id: 'app',
            client_secret: 's',
            mailbox: 'm',
            graph_url: 'http://graph.example/v1.0',
            host: 'x',
            port: 443,
          },
          { name: 'd', type: 'ews', host: 'x', port: 1 },
        ],
      }),
      '/etc',
      {},
    );
    expect(result.ok ? [] : result.errors).toEqual([
      'smarthosts[2].tenant: expected the directory (tenant) ID or a domain of the tenant',
      'smarthosts[2].graph_url: expected an https:// URL of the Graph API, e.g. https://graph.microsoft.com/v1.0',
      'smarthosts[2]: Unrecognized keys: "host", "port"',
      'smarthosts[3].type: expected type: smtp (the default) or type: graph',
    ]);
    const across = parseConfig(
      minimal({
        routes: { default: { smarthosts: ['a', 'b'] } },
        smarthosts: [noCredential, bothCredentials],
      }),
      '/etc',
      {},
    );
    expect(across.ok ? [] : across.errors).toEqual([
      'smarthosts[0].client_secret: a Graph host needs client_secret or certificate: { cert, key } (one)',
      'smarthosts[1].client_secret: a Graph host needs client_secret or certificate: { cert, key } (one)',
      'smarthosts[1].mailbox: required with send_as: mailbox (the mailbox that sends, e.g. relay@corp.example)',
    ]);
  });

  test('fleet keys of issue 8: state and PROXY protocol, defaults and mistakes with their path', () => {
    const defaults = parseConfig(minimal(), '/etc', {});
    if (!defaults.ok) throw new Error(defaults.errors.join('\n'));
    expect(defaults.config.state).toEqual({ store: 'memory' });
    expect(defaults.config.listeners[0]).toMatchObject({ proxy_protocol: false, trusted_proxies: [] });

    const fleet = parseConfig(
      minimal({
        listeners: [
          { name: 'lb', address: '0.0.0.0:2525', proxy_protocol: true, trusted_proxies: ['10.0.0.5/32', 'fd00::5'] },
        ],
        state: { store: 'redis', redis: { url: 'redis://:${REDIS_PASS}@10.0.0.7:6379/2' }, fleet_size: 3 },
      }),
      '/etc',
      { REDIS_PASS: 'secret' },
    );
    if (!fleet.ok) throw new Error(fleet.errors.join('\n'));
    expect(fleet.config.state).toEqual({
      store: 'redis',
      redis: {
        url: 'redis://:secret@10.0.0.7:6379/2',
        key_prefix: 'smarthop:',
        command_timeout: 500,
        connect_timeout: 2000,
      },
      fleet_size: 3,
    });
    expect(fleet.config.listeners[0].trusted_proxies.map(([address, bits]) => `${address.toString()}/${bits}`)).toEqual(
      ['10.0.0.5/32', 'fd00::5/128'],
    );

    const mistakes = parseConfig(
      minimal({
        listeners: [
          { name: 'lb', address: '0.0.0.0:2525', proxy_protocol: true },
          { name: 'direct', address: '0.0.0.0:2526', trusted_proxies: ['10.0.0.5'] },
        ],
        state: { store: 'redis' },
      }),
      '/etc',
      {},
    );
    expect(mistakes.ok ? [] : mistakes.errors).toEqual([
      'state.redis: required with store: redis ({ url: redis://host:6379 })',
      'state.fleet_size: required with store: redis: how many relays share the limits ' +
        '(while Redis is unreachable each enforces 1/fleet_size of every limit)',
      'listeners[0].trusted_proxies: required with proxy_protocol: true ' +
        '(the load balancers allowed to send a PROXY header, e.g. [10.0.0.5/32])',
      'listeners[1].trusted_proxies: only meaningful with proxy_protocol: true',
    ]);
    const url = parseConfig(
      minimal({ state: { store: 'redis', redis: { url: 'http://10.0.0.7' }, fleet_size: 0 } }),
      '/etc',
      {},
    );
    expect(url.ok ? [] : url.errors).toEqual([
      'state.redis.url: expected a redis:// or rediss:// URL like redis://10.0.0.5:6379/0',
      'state.fleet_size: Too small: expected number to be >=1',
    ]);
  });

  test('formatPath writes the bracket form', () => {
    expect(formatPath(['clients', 1, 'password_hash'])).toBe('clients[1].password_hash');
    expect(formatPath(['routes', 'default', 'smarthosts', 0])).toBe('routes.default.smarthosts[0]');
  });

  test('the bundled relay.config.yaml is valid', () => {
    const result = loadConfigFile(path.join(ROOT, 'relay.config.yaml'), {});
    expect(result.ok ? [] : result.errors).toEqual([]);
  });
});

describe('ClientDirectory.byAddress: the network client of a source address', () => {
  /** `lookups.count`: how many times a client's networks were searched. */
  function directory(lookups = { count: 0 }) {
    const result = parseConfig(
      minimal({
        clients: [
          { name: 'one-host', networks: ['127.0.0.1/32'] },
          { name: 'lan', networks: ['10.0.0.0/8', 'fd00::/8'] },
        ],
      }),
      ROOT,
    );
    if (!result.ok) throw new Error(result.errors.join('; '));
    const counted = result.config.clients.map((client) => ({
      ...client,
      networks: new Proxy(client.networks, {
        get: (target, key, receiver) => (key === 'some' && lookups.count++, Reflect.get(target, key, receiver)),
      }),
    }));
    return new ClientDirectory(counted);
  }

  test('answers the same, asked once or again and again (each address is parsed once and remembered)', () => {
    const lookups = { count: 0 };
    const clients = directory(lookups);
    const searchedAfter: number[] = [];
    for (let round = 0; round < 3; round++) {
      expect(clients.byAddress('127.0.0.1')?.name).toBe('one-host');
      expect(clients.byAddress('::ffff:127.0.0.1')?.name).toBe('one-host');
      expect(clients.byAddress('10.1.2.3')?.name).toBe('lan');
      expect(clients.byAddress('fd00::5%eth0')?.name).toBe('lan');
      // Never an open relay: a neighbour of a trusted host, or no address at all, stays nobody.
      expect(clients.byAddress('127.0.0.2')).toBeUndefined();
      expect(clients.byAddress('::ffff:127.0.0.2')).toBeUndefined();
      expect(clients.byAddress('not an address')).toBeUndefined();
      searchedAfter.push(lookups.count);
    }
    // The networks are searched in the first round only: later rounds answer from memory.
    expect(searchedAfter[0]).toBeGreaterThan(0);
    expect(searchedAfter).toEqual([searchedAfter[0], searchedAfter[0], searchedAfter[0]]);
  });

  test('past its limit of remembered addresses it starts over and still answers right', () => {
    const clients = directory();
    expect(clients.byAddress('127.0.0.2')).toBeUndefined();
    for (let n = 0; n < ADDRESS_MEMO_LIMIT + 10; n++)
      expect(clients.byAddress(`10.0.${n >> 8}.${n & 255}`)?.name).toBe('lan');
    expect(clients.byAddress('127.0.0.1')?.name).toBe('one-host');
    expect(clients.byAddress('127.0.0.2')).toBeUndefined();
    expect((clients as unknown as { addressMemo: Map<string, unknown> }).addressMemo.size).toBeLessThanOrEqual(
      ADDRESS_MEMO_LIMIT,
    );
  });
});

describe('CLI', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => removeDir(dir));

  test('check-config on a broken file exits 1 and prints every error with its path', () => {
    const file = path.join(dir, 'broken.yaml');
    writeFileSync(
      file,
      [
        'hostname: relay.test',
        'spool: { dir: ./spool, retry: { initial: soon } }',
        'listeners: [{ name: smtp, address: "127.0.0.1:2525" }]',
        'clients:',
        '  - { name: lan, networks: [10.0.0.0/8] }',
        '  - { name: shop, username: shop, password_hash: "secret" }',
        'routes: { default: { smarthosts: [primary] } }',
        'smarthosts: [{ name: primary, host: smtp.example, port: 587 }]',
      ].join('\n'),
    );
    const run = spawnSync(process.execPath, [CLI, 'check-config', '-c', file], { encoding: 'utf8' });
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('clients[1].password_hash: expected scrypt hash, got plain text');
    expect(run.stderr).toContain('spool.retry.initial: expected a duration');
  });

  test('check-config on the bundled file exits 0', () => {
    const run = spawnSync(process.execPath, [CLI, 'check-config', '-c', path.join(ROOT, 'relay.config.yaml')], {
      encoding: 'utf8',
    });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });

  test('start refuses an invalid config with the same message and a non-zero exit', () => {
    const file = path.join(dir, 'relay.config.yaml');
    copyFileSync(path.join(ROOT, 'relay.config.yaml'), file);
    writeFileSync(file, `${readFileSync(file, 'utf8')}\nbogus_key: 1\n`);
    const run = spawnSync(process.execPath, [CLI, 'start', '-c', file], { encoding: 'utf8', timeout: 25_000 });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/bogus_key/);
  });

  test('start refuses a smart host ca file that does not exist, naming it, with exit 1', () => {
    const file = path.join(dir, 'relay.yaml');
    writeFileSync(
      file,
      [
        'hostname: relay.test',
        'spool: { dir: ./spool }',
        'listeners: [{ name: smtp, address: "127.0.0.1:0" }]',
        'clients: [{ name: lan, networks: [127.0.0.0/8] }]',
        'routes: { default: { smarthosts: [primary] } }',
        'smarthosts: [{ name: primary, host: 127.0.0.1, port: 2601, ca: ./missing-ca.pem }]',
      ].join('\n'),
    );
    const run = spawnSync(process.execPath, [CLI, 'start', '-c', file], { encoding: 'utf8', timeout: 25_000 });
    expect(run.status).toBe(1);
    expect(run.stderr).toBe(
      `${file}: cannot start: ENOENT: no such file or directory, open '${path.join(dir, 'missing-ca.pem')}'\n`,
    );
  });

  // In-process: how check-config prints a YAML error, with its exit code, is first-use.e2e's test.
  test('YAML syntax errors are reported, not thrown', () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(file, 'hostname: [unclosed\n');
    const result = loadConfigFile(file);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    // The file, line and column of the first error.
    expect(result.errors[0].startsWith(`${file}:`)).toBe(true);
    expect(result.errors[0].slice(file.length)).toMatch(/^:\d+:\d+: /);
  });

  test('hash-password reads stdin, strips one trailing newline, and prints a hash that verifies', async () => {
    const hash = execFileSync(process.execPath, [CLI, 'hash-password'], { input: 'pa ss\n', encoding: 'utf8' }).trim();
    expect(hash).toMatch(/^scrypt\$16384\$8\$1\$/);
    expect(await verifyPassword('pa ss', hash)).toBe(true);
    expect(await verifyPassword('pa ss\n', hash)).toBe(false);
    const config = parseConfig(
      minimal({ clients: [{ name: 'app', username: 'app', password_hash: hash }] }),
      '/etc',
      {},
    );
    expect(config.ok).toBe(true);
  });
});
