import { HeaderBlock } from '../src/message/header-block';
import { loadDkimKey } from '../src/forward/reenvelope/dkim-keys';
import { RelaxedBodyHash, signatures } from '../src/forward/reenvelope/dkim-signer';
import type { SmtpSink } from '../src/tools/sink';
import {
  dkimpy,
  makeDkimKey,
  verifyAllWithDkimpy,
  verifyDkim,
  verifyWithDkimpy,
  zoneResolver,
  type TestKey,
} from './helpers/dkim';
import {
  baseConfig,
  buildConfig,
  removeDir,
  startRelay,
  startSink,
  tempDir,
  waitFor,
  type RunningRelay,
} from './helpers/harness';
import { testUnless } from './helpers/skip';
import { openSession } from './helpers/smtp-client';

/**
 * Signatures checked by a verifier that shares no code with mailauth: dkimpy (Debian's
 * python3-dkim, the library behind many milters). mailauth's header canonicalisation reads byte
 * 0xA0 as whitespace, so a signer built on it signs a raw UTF-8 Subject with "à" or "Р" over the
 * wrong text; mailauth's own verifier passes such a signature, dkimpy does not. The raw-UTF-8 cases
 * below hold the signer to the bytes.
 */

jest.setTimeout(60_000);

describe('DKIM signatures verify with dkimpy, an independent verifier', () => {
  // CI installs python3-dkim (see .ci/run), so there this never skips.
  const missing =
    dkimpy() === null ? '/usr/bin/python3 cannot import dkim (apt-get install python3-dkim); CI must have it' : null;
  if (missing !== null && process.env.CI) {
    test('dkimpy is installed in CI', () => {
      throw new Error(
        'CI is set but /usr/bin/python3 cannot import dkim: .ci/run must install the Debian package python3-dkim',
      );
    });
    return;
  }
  const maybe = testUnless(missing);

  let keysDir: string;
  let rsa: TestKey;
  let ed: TestKey;
  let records: Record<string, string>;

  beforeAll(() => {
    keysDir = tempDir('smarthop-keys-');
    rsa = makeDkimKey(keysDir, 'rsa');
    ed = makeDkimKey(keysDir, 'ed25519');
    records = { 's1._domainkey.corp.example': rsa.record, 'e1._domainkey.corp.example': ed.record };
  });

  afterAll(() => removeDir(keysDir));

  const keys = () => [
    loadDkimKey({ domain: 'corp.example', selector: 's1', private_key: rsa.file }),
    loadDkimKey({ domain: 'corp.example', selector: 'e1', private_key: ed.file }),
  ];

  /** Signs header lines (UTF-8 text, held as its bytes) over a body and returns the whole message. */
  async function signedMessage(lines: string[], body: string): Promise<Buffer> {
    const head = Buffer.from(lines.join('\r\n'), 'utf8');
    const hash = new RelaxedBodyHash();
    hash.update(Buffer.from(body, 'utf8'));
    const signed = await signatures(keys(), HeaderBlock.parse(head).fields, hash.digest(), new Date());
    return Buffer.concat([Buffer.from(signed, 'latin1'), head, Buffer.from('\r\n\r\n'), Buffer.from(body, 'utf8')]);
  }

  const ordinary = [
    'From: App <app@corp.example>',
    'To: user@example.com',
    'Subject: Invoice 42',
    'Date: Mon, 30 Nov 2026 12:00:00 +0000',
    'Message-ID: <42@corp.example>',
  ];

  maybe('an ordinary ASCII message: dkimpy and mailauth both pass both signatures (RSA and Ed25519)', async () => {
    const message = await signedMessage(ordinary, 'Hello\r\n');
    expect(verifyWithDkimpy(message, records)).toEqual([true, true]);
    const resolver = zoneResolver({
      's1._domainkey.corp.example': { TXT: [rsa.record] },
      'e1._domainkey.corp.example': { TXT: [ed.record] },
    });
    expect(await verifyDkim(message, resolver)).toEqual([
      'corp.example/s1 rsa-sha256 pass',
      'corp.example/e1 ed25519-sha256 pass',
    ]);
  });

  maybe.each([
    ['a raw UTF-8 Subject with "à" and "Р" (byte 0xA0)', ['Subject: Reçu à Рим, voilà']],
    ['a raw UTF-8 display name', ['From: Élodie Ràmirez <app@corp.example>']],
    ['tabs, runs of spaces and trailing space', ['Subject:\t Scan \t  from   3F  ']],
    [
      'a folded To and two Cc fields',
      ['To: a@example.com,\r\n\tb@example.com,\r\n   c@example.com', 'Cc: d@example.com', 'Cc: e@example.com'],
    ],
    ['an empty Subject', ['Subject:']],
  ])('%s: dkimpy passes both signatures', async (_name, extra) => {
    const lines = [
      ...ordinary.filter(
        (line) => !extra.some((e) => e.split(':')[0].trim().toLowerCase() === line.split(':')[0].toLowerCase()),
      ),
      ...extra,
    ];
    const message = await signedMessage(lines, 'Grüße  \r\n\r\nà bientôt\r\n');
    expect(verifyWithDkimpy(message, records)).toEqual([true, true]);
  });

  maybe(
    'without a From (h= still names it), and with 1 to 30 To fields, wherever the folds of h= and b= fall',
    async () => {
      const messages = [
        await signedMessage(
          ordinary.filter((line) => !line.startsWith('From:')),
          'Hello\r\n',
        ),
      ];
      for (let n = 1; n <= 30; n++) {
        messages.push(
          await signedMessage(
            [...ordinary, ...Array.from({ length: n }, (_, i) => `To: r${i}@example.com`)],
            'Hello\r\n',
          ),
        );
      }
      expect(verifyAllWithDkimpy(messages, records)).toEqual(messages.map(() => [true, true]));
    },
  );

  maybe('through the relay: a raw UTF-8 Subject reaches the smart host with signatures dkimpy passes', async () => {
    const dir = tempDir();
    let sink: SmtpSink | null = null;
    let running: RunningRelay | null = null;
    try {
      sink = await startSink({});
      running = await startRelay(
        buildConfig(
          baseConfig(dir, [{ name: 'primary', port: sink.port }], {
            routes: {
              default: {
                smarthosts: ['primary'],
                dkim: [
                  { domain: 'corp.example', selector: 's1', private_key: rsa.file },
                  { domain: 'corp.example', selector: 'e1', private_key: ed.file, algorithm: 'ed25519-sha256' },
                ],
              },
            },
          }),
          dir,
        ),
      );
      const { client } = await openSession(running.smtpPort);
      const lines = [
        'From: App <app@corp.example>',
        'To: user@example.com',
        'Subject: Reçu à Рим',
        '',
        'Bonjour à tous',
        '',
      ];
      const data = Buffer.from(lines.join('\r\n'), 'utf8');
      expect(await client.sendMessage('app@corp.example', ['user@example.com'], data)).toMatch(/^250 /);
      await client.quit();
      await waitFor(() => sink?.messages.length === 1, 10_000, 'delivery');
      const received = sink.messages[0].data;
      expect(received.toString('utf8')).toContain('Subject: Reçu à Рим\r\n');
      expect(verifyWithDkimpy(received, records)).toEqual([true, true]);
    } finally {
      await running?.stop();
      await sink?.close();
      removeDir(dir);
    }
  });
});
