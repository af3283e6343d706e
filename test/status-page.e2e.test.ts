import { existsSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser, type Page, type Request } from 'playwright-core';
import { removeDir, tempDir } from './helpers/harness';
import { recordSkip } from './helpers/skip';
import { startTrafficRelay, type TrafficRelay } from './helpers/trace-traffic';

/**
 * The status page in a real browser: Debian's chromium, headless, driven by playwright-core,
 * against a relay that has delivered, bounced, deferred and refused mail. The test reads what the
 * page shows, searches with its trace box, and keeps a screenshot in test-artifacts/.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = path.resolve(__dirname, '..', 'test-artifacts');
// The machine's network is closed: without these, chromium tries Google's hosts at every start.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const missing = !existsSync(CHROMIUM);
if (missing && !process.env.CI) recordSkip(`no ${CHROMIUM} (apt-get install chromium); CI must have it`);

jest.setTimeout(90_000);

(missing && !process.env.CI ? describe.skip : describe)('the status page in headless chromium', () => {
  let dir = '';
  let relay: TrafficRelay;
  let browser: Browser;
  /**
   * The admin's tab: a browser context with the token as its Basic password, shared by the tests that
   * sign in (each context costs chromium a renderer process, most of a second of CPU).
   */
  let admin: Page;

  beforeAll(async () => {
    dir = tempDir('smarthop-page-');
    relay = await startTrafficRelay(dir);
    // playwright starts chromium with a fresh, empty profile of its own (its --user-data-dir).
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const context = await browser.newContext({
      httpCredentials: { username: 'admin', password: relay.token },
      viewport: { width: 1400, height: 1100 },
    });
    admin = await context.newPage();
  });
  afterAll(async () => {
    await browser?.close();
    await relay?.running.stop();
    await Promise.all((relay?.sinks ?? []).map((sink) => sink.close()));
    removeDir(dir);
  });

  const base = () => `http://127.0.0.1:${relay.running.httpPort}`;

  test('queue, smart hosts, top clients, last events; the trace box finds a bounce and its DSN', async () => {
    const page = admin;
    const requests: string[] = [];
    const record = (request: Request) => requests.push(request.url());
    page.on('request', record);
    const response = await page.goto(`${base()}/`);
    expect(response?.status()).toBe(200);
    expect(response?.headers()['content-security-policy']).toMatch(/^default-src 'none'; style-src 'sha256-/);

    // Queue: one message deferred, the bounced one in the dead-letter queue; the oldest waiting is the deferred one.
    expect(await page.textContent('[data-count="deferred"] b')).toBe('1');
    expect(await page.textContent('[data-count="dead"] b')).toBe('1');
    expect(await page.textContent('#oldest')).toContain(relay.ids.deferred);
    // Smart hosts: both up, breakers closed; backup's quota has one message less (the failover) of 100 an hour.
    const cells = (selector: string) => page.locator(`${selector} td`).allTextContents();
    expect((await cells('[data-smarthost="primary"]')).slice(0, 4)).toEqual(['primary', 'up', 'closed', '-']);
    expect((await cells('[data-smarthost="backup"]')).slice(0, 4)).toEqual([
      'backup',
      'up',
      'closed',
      expect.stringMatching(/^9\d messages\/1h$/),
    ]);
    // Top clients of the last hour: lan sent three messages, one recipient each.
    expect(await cells('[data-client="lan"]')).toEqual(['lan', '3', '3']);
    // Last events: the refusal of the stranger and the DSN's delivery are there.
    const events = await page.textContent('#events');
    expect(events).toContain('rejected');
    expect(events).toContain(relay.ids.deferred);
    expect(events).toContain('5.7.1');

    // The trace box: a GET form, so the browser sends the token by itself and never in the URL.
    await page.selectOption('select[name="by"]', 'recipient');
    await page.fill('input[name="q"]', 'nobody@example.com');
    await Promise.all([page.waitForURL(/\?by=recipient&q=nobody/), page.click('button[type="submit"]')]);
    expect(page.url()).not.toContain(relay.token);
    const story = page.locator(`.story[data-queue-id="${relay.ids.bounced}"]`);
    expect(await story.count()).toBe(1);
    const text = (await story.textContent()) ?? '';
    expect(text).toContain('bounced');
    expect(text).toContain('550 5.1.1 No such user here');
    expect(text).toMatch(
      /attempt\s+primary\[127\.0\.0\.1\]:\d+: failed, 0\/1 accepted \(550 5\.1\.1 No such user here\)/,
    );
    expect(text).toMatch(/attempt\s+backup\[127\.0\.0\.1\]:\d+: failed/);
    expect(text).toMatch(/dsn\s+\w+ to <app@corp\.example> about <nobody@example\.com>/);
    expect(text).toMatch(/delivered\s+DSN \w+: <app@corp\.example> via primary/);

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'status-page.png'), fullPage: true });

    // Everything came from the relay itself: no script, font or style from anywhere else.
    expect(requests.every((url) => url.startsWith(base()))).toBe(true);
    // The token reached no log line, and no URL the browser asked for.
    expect(relay.logLines.join('\n')).not.toContain(relay.token);
    expect(requests.some((url) => url.includes(relay.token))).toBe(false);
    page.off('request', record);
  });

  test('without the right token the browser shows nothing: the answer is a Basic challenge', async () => {
    // Headless, nobody answers the challenge: chromium shows the 401 or gives up on the navigation.
    for (const httpCredentials of [undefined, { username: 'admin', password: 'wrong-token' }]) {
      const context = await browser.newContext(httpCredentials ? { httpCredentials } : {});
      const page = await context.newPage();
      const shown = await page.goto(`${base()}/`).then(
        async (response) => ({ outcome: `HTTP ${response?.status()}`, html: await page.content() }),
        (err: Error) => ({
          outcome: /ERR_INVALID_AUTH_CREDENTIALS/.test(err.message) ? 'HTTP 401' : err.message,
          html: '',
        }),
      );
      expect(shown.outcome).toBe('HTTP 401');
      expect(shown.html).not.toContain(relay.ids.deferred);
      await context.close();
    }
    // What the browser got, checked directly: a challenge and no data. Basic with the token as password,
    // or the API's bearer token, pass.
    const get = async (authorization?: string) => {
      const response = await fetch(`${base()}/`, { headers: authorization ? { authorization } : {} });
      return {
        status: response.status,
        challenge: response.headers.get('www-authenticate'),
        body: await response.text(),
      };
    };
    const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    const refused = await get();
    expect(refused.status).toBe(401);
    expect(refused.challenge).toMatch(/^Basic realm="smarthop"/);
    expect(refused.body).not.toContain(relay.ids.deferred);
    expect((await get(basic(relay.token, 'wrong-token'))).status).toBe(401);
    expect((await get(basic('anyone', relay.token))).status).toBe(200);
    expect((await get(`Bearer ${relay.token}`)).status).toBe(200);
  });

  test('a bad pattern in the trace box is explained on the page', async () => {
    const page = admin;
    await page.goto(`${base()}/?by=recipient&q=${encodeURIComponent('!nobody@example.com')}&since=24h`);
    expect(await page.textContent('#trace-error')).toMatch(/^recipient: negated patterns are not supported/);
    await page.goto(`${base()}/?by=queue_id&q=NOSUCHID0001&since=`);
    expect(await page.textContent('#trace-empty')).toBe('No message matches.');
  });
});
