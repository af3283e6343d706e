import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { GraphSmartHostConfig } from '../src/config/schema';
import { checkGraphHost } from '../src/tools/doctor/graph';
import { formatGraphReport, graphExitCode } from '../src/tools/doctor/report';
import { CLI } from './helpers/child-relay';
import { graphPkiPerFile, OUTSIDE_MAILBOX, startGraphEmulator, type GraphEmulator } from './helpers/graph-emulator';
import { freePort } from '../bench/free-port';
import { removeDir, tempDir } from './helpers/temp-dir';
import { baseConfig, buildConfig } from './helpers/test-config';

/** `smarthop doctor` on Graph smart hosts, against the emulator: every failure says what to fix. */

const pki = graphPkiPerFile();

describe('doctor: Graph smart hosts', () => {
  let dir: string;
  let emulator: GraphEmulator;
  let hostSpec: (overrides?: Record<string, unknown>) => { name: string; [key: string]: unknown };

  beforeEach(async () => {
    dir = tempDir();
    ({ emulator, host: hostSpec } = await startGraphEmulator(dir, {}, pki));
  });

  afterEach(async () => {
    await emulator.close();
    removeDir(dir);
  });

  function check(overrides: Record<string, unknown> = {}) {
    return checkGraphHost(
      buildConfig(baseConfig(dir, [hostSpec(overrides)]), dir).smarthosts[0] as GraphSmartHostConfig,
    );
  }

  test('a token and a mailbox the app can use: pass, and nothing is sent', async () => {
    expect(await check()).toEqual({ smarthost: 'm365', token: 'pass', mailbox: 'pass', verdict: 'pass', problems: [] });
    expect(emulator.requests.map((request) => request.endpoint)).toEqual(['token', 'drafts']);
    expect(emulator.delivered).toHaveLength(0);
  });

  test.each<[string, Record<string, unknown>, RegExp]>([
    [
      'a wrong secret (the secret ID instead of its value)',
      { client_secret: 'a-secret-id' },
      /AADSTS7000215: Invalid client secret provided.*to fix: .*copy the secret's Value \(not its Secret ID\)/,
    ],
    [
      'an app the tenant does not have',
      { client_id: 'ffffffff-0000-0000-0000-000000000000' },
      /AADSTS700016: .*to fix: no app with this client_id in the tenant/,
    ],
    [
      'a tenant that does not exist',
      { token_url: 'TENANT_URL' },
      /AADSTS90002: Tenant 'wrong\.test' not found.*to fix: tenant not found: use the Directory \(tenant\) ID/,
    ],
    [
      'a scope of another cloud',
      { scope: 'https://graph.microsoft.us/.default' },
      /AADSTS70011: .*to fix: the scope is not valid/,
    ],
  ])('%s: the token fails, and the problem says what to fix', async (_case, overrides, problem) => {
    const given =
      overrides.token_url === 'TENANT_URL'
        ? { token_url: emulator.tokenUrl.replace('/contoso.test/', '/wrong.test/') }
        : overrides;
    const result = await check(given);
    expect(result).toMatchObject({ token: 'fail', mailbox: 'skip', verdict: 'fail' });
    expect(result.problems).toEqual([expect.stringMatching(problem)]);
  });

  test('a mailbox the tenant does not have: fail, with what to fix', async () => {
    const result = await check({ mailbox: 'nobody@corp.example' });
    expect(result).toMatchObject({ token: 'pass', mailbox: 'fail', verdict: 'fail' });
    expect(result.problems).toEqual([
      expect.stringMatching(
        /^mailbox: nobody@corp\.example: Microsoft Graph 404 ErrorInvalidUser: .*; to fix: no such mailbox/,
      ),
    ]);
  });

  test("a mailbox outside the app's scope (or no Mail.ReadWrite): a warning about large messages", async () => {
    const result = await check({ mailbox: OUTSIDE_MAILBOX });
    expect(result).toMatchObject({ token: 'pass', mailbox: 'warn', verdict: 'warn' });
    expect(result.problems[0]).toMatch(
      /403 ErrorAccessDenied.*over 4 MB \(sent as a draft\) need Mail\.ReadWrite, scoped .* with RBAC for Applications/,
    );
  });

  test('a token endpoint nobody answers at: fail, naming it', async () => {
    const port = await freePort();
    const url = `https://127.0.0.1:${port}/t/oauth2/v2.0/token`;
    const result = await check({ token_url: `https://127.0.0.1:${port}/t/oauth2/v2.0/token` });
    expect(result).toMatchObject({
      token: 'fail',
      verdict: 'fail',
      problems: [expect.stringContaining(`token: ${url} cannot be reached: POST ${url}: ECONNREFUSED`)],
    });
  });

  test('the report: a table, then what to fix; exit 1 when a host cannot send', async () => {
    const checks = [await check(), await check({ client_secret: 'wrong' })];
    const report = formatGraphReport(checks.map((c, i) => ({ ...c, smarthost: `m365-${i}` })));
    expect(report.split('\n').slice(0, 3)).toEqual([
      'GRAPH SMARTHOST  TOKEN  MAILBOX  VERDICT',
      'm365-0           pass   pass     PASS',
      'm365-1           fail   skip     FAIL',
    ]);
    expect(report).toContain('1 of 2 Graph smart hosts cannot send');
    expect(graphExitCode(checks)).toBe(1);
    expect(graphExitCode([checks[0]])).toBe(0);
  });

  test('smarthop doctor runs the Graph checks after the DNS ones', async () => {
    const file = path.join(dir, 'relay.json');
    writeFileSync(file, JSON.stringify(baseConfig(dir, [hostSpec({ client_secret: 'wrong' })])));
    const child = spawn(process.execPath, [CLI, 'doctor', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const [code] = (await once(child, 'exit')) as [number];
    expect(output).toMatch(/GRAPH SMARTHOST +TOKEN +MAILBOX +VERDICT\nm365 +fail +skip +FAIL/);
    expect(output).toContain('AADSTS7000215');
    expect(code).toBe(1);
  });
});
