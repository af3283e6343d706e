import { parseConfig } from '../src/config/load';

function minimal(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hostname: 'relay.test',
    max_message_size: '10MiB',
    spool: { dir: './spool' },
    listeners: [{ name: 'smtp', address: '127.0.0.1:2525' }],
    clients: [{ name: 'erp', networks: ['10.0.0.0/8'], policy: 'legacy' }],
    routes: { default: { smarthosts: ['primary'] } },
    smarthosts: [{ name: 'primary', host: 'smtp.example', port: 587 }],
    ...overrides,
  };
}

describe('policy and limits config', () => {
  test('a full policy parses: globs and regexes compiled once, units converted, paths resolved to the config', () => {
    const result = parseConfig(
      minimal({
        policies: {
          legacy: {
            allowed_senders: ['*@corp.example'],
            denied_recipients: ['*@competitor.example'],
            max_message_size: '5MiB',
            max_recipients: 50,
            rate_limits: [
              { window: '1m', messages: 60 },
              { window: '1h', recipients: 2000, bytes: '100MiB' },
            ],
            blocked_attachments: ['EXE', '.js'],
            header_rules: [{ header: 'Subject', match: 'lottery', action: 'reject' }],
            suppressed_recipients: 'lists/suppressed.txt',
          },
        },
      }),
      '/etc/smarthop',
      {},
    );
    if (!result.ok) throw new Error(result.errors.join('\n'));
    const policy = result.config.policies.legacy;
    expect(policy.max_message_size).toBe(5 * 1024 * 1024);
    expect(policy.rate_limits).toEqual([
      { window: 60_000, messages: 60 },
      { window: 3_600_000, recipients: 2000, bytes: 100 * 1024 * 1024 },
    ]);
    expect(policy.blocked_attachments).toEqual(['exe', 'js']);
    // Plain data: the pattern as written; the policy engine compiles it.
    expect(policy.header_rules[0].match).toBe('lottery');
    expect(policy.suppressed_recipients).toBe('/etc/smarthop/lists/suppressed.txt');
    expect(policy.allowed_senders).toEqual(['*@corp.example']);
    expect(result.config.limits).toEqual({
      connections_per_stranger: 10,
      auth_failures: { max: 10, window: 600_000, lockout: 900_000, delay: 1000 },
      auth_failures_per_username: { slow_after: 10, max: 50, window: 3_600_000, delay: 2000 },
      max_tracked_addresses: 100_000,
      ipv6_prefix: 64,
      connection_rate_per_stranger: { window: 60_000, max: 120 },
      ipv6_hosts_per_prefix: 4,
      password_checks: { concurrent: 2, queue: 100 },
    });
  });

  test('every policy error is reported with its path', () => {
    const result = parseConfig(
      minimal({
        policies: {
          legacy: {
            allowed_senders: ['*@corp.example', 'bü*.example'],
            denied_recipients: ['!x@y'],
            max_recipients: 5000,
            rate_limits: [{ window: '1m' }, { window: 'soon', messages: 1 }],
            blocked_attachments: ['a b'],
            header_rules: [
              { header: 'Subject', match: '(unclosed', action: 'reject' },
              { header: 'Bad Name', match: 'x', action: 'drop' },
            ],
          },
        },
        limits: { connection_rate: { window: '1m', max: 0 }, surprise: 1 },
      }),
      '/etc',
      {},
    );
    const errors = result.ok ? [] : result.errors;
    const expected = [
      /^policies\.legacy\.allowed_senders\[1\]: a glob inside the non-ASCII label "bü\*"/,
      /^policies\.legacy\.denied_recipients\[0\]: negated patterns are not supported/,
      /^policies\.legacy\.max_recipients: /,
      /^policies\.legacy\.rate_limits\[0\]: a rate limit needs messages, recipients or bytes/,
      /^policies\.legacy\.rate_limits\[1\]\.window: expected a duration/,
      /^policies\.legacy\.blocked_attachments\[0\]: expected a file-name extension/,
      /^policies\.legacy\.header_rules\[0\]\.match: invalid regular expression: /,
      /^policies\.legacy\.header_rules\[1\]\.header: expected a header field name/,
      /^policies\.legacy\.header_rules\[1\]\.action: /,
      /^limits\.connection_rate\.max: /,
      /^limits: .*surprise/,
    ];
    for (const pattern of expected) expect(errors.some((e) => pattern.test(e))).toBe(true);
  });

  test('header rules are RE2: nested repeats load (linear time in RE2), lookaround is refused with its path', () => {
    const rules = [
      { header: 'Subject', match: '^(a+)+$', action: 'reject' },
      { header: 'Subject', match: '(?<!re: )lottery', action: 'reject' },
      { header: 'X-Mailer', match: '^PHPMailer [0-9.]+', action: 'strip' },
    ];
    const result = parseConfig(minimal({ policies: { legacy: { header_rules: rules } } }), '/etc', {});
    const errors = result.ok ? [] : result.errors;
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(
      new RegExp(
        /^policies\.legacy\.header_rules\[1\]\.match: invalid regular expression: .*/.source +
          /\(header rules use RE2 syntax: no lookaround, no backreferences\)$/.source,
      ),
    );

    const loaded = parseConfig(minimal({ policies: { legacy: { header_rules: [rules[0], rules[2]] } } }), '/etc', {});
    if (!loaded.ok) throw new Error(loaded.errors.join('\n'));
    expect(loaded.config.policies.legacy.header_rules.map((rule) => rule.match)).toEqual([
      '^(a+)+$',
      '^PHPMailer [0-9.]+',
    ]);
  });

  test('the config is plain data: patterns stay as written; each bad one (rewrite_from.unless too) has a path', () => {
    const bad = parseConfig(
      minimal({
        policies: { legacy: { allowed_senders: ['(erp|crm)@corp.example'], allowed_recipients: ['{1..3}@x.example'] } },
        routes: {
          default: {
            smarthosts: ['primary'],
            rewrite_from: { unless: ['*@corp.example', 'a b@corp.example'], to: 'noreply@corp.example' },
          },
        },
      }),
      '/etc',
      {},
    );
    const errors = bad.ok ? [] : bad.errors;
    expect(errors).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /^policies\.legacy\.allowed_senders\[0\]: parentheses are not part of an address pattern/,
        ),
        expect.stringMatching(
          /^policies\.legacy\.allowed_recipients\[0\]: brace ranges like \{1\.\.3\} are not supported/,
        ),
        expect.stringMatching(/^routes\.default\.rewrite_from\.unless\[1\]: patterns cannot contain spaces/),
      ]),
    );

    const good = parseConfig(
      minimal({
        policies: {
          legacy: {
            allowed_senders: ['*@corp.example'],
            header_rules: [{ header: 'Subject', match: 'lottery', action: 'reject' }],
          },
        },
        routes: {
          default: { smarthosts: ['primary'], rewrite_from: { unless: ['corp.example'], to: 'noreply@corp.example' } },
        },
      }),
      '/etc',
      {},
    );
    if (!good.ok) throw new Error(good.errors.join('\n'));
    // Nothing in it but JSON values: a reload compares it as it is, and a copy equals it.
    expect(JSON.parse(JSON.stringify(good.config.policies))).toEqual(good.config.policies);
    expect(JSON.parse(JSON.stringify(good.config.routes))).toEqual(good.config.routes);
  });

  test('cross-checks: a policy may only lower max_message_size; one limit per dimension and window', () => {
    const result = parseConfig(
      minimal({
        policies: {
          legacy: {
            max_message_size: '20MiB',
            rate_limits: [
              { window: '1m', messages: 10 },
              { window: '60s', messages: 20 },
            ],
          },
        },
      }),
      '/etc',
      {},
    );
    expect(result.ok ? [] : result.errors).toEqual([
      "policies.legacy.max_message_size: a policy may only lower max_message_size (the relay's is 10485760 bytes)",
      'policies.legacy.rate_limits[1]: a second messages limit for the same window',
    ]);
  });
});
