import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

/**
 * The crash-and-outage soak in a small bounded size: the real relay binary is killed with SIGKILL
 * several times under load while smart hosts go down and come back; nothing that got a 250 may be
 * missing at the end. `npm run soak -- --messages N --kills K` is the long run.
 */
test('soak: every message that got a 250 is delivered despite kill -9 and smart-host outages', () => {
  const soak = path.resolve(__dirname, '../dist/bench/soak.js');
  const run = spawnSync(
    process.execPath,
    [soak, '--messages', '150', '--kills', '3', '--connections', '6', '--seed', '7', '--json'],
    { encoding: 'utf8', timeout: 170_000 },
  );
  if (run.status !== 0) process.stderr.write(`${run.stdout}\n${run.stderr}\n`);
  const figures = JSON.parse(run.stdout.trim().split('\n').pop() as string) as {
    accepted: number;
    lost: number;
    kills: number;
    delivered: number;
  };
  expect(figures.kills).toBe(3);
  expect(figures.accepted).toBe(150);
  expect(figures.lost).toBe(0);
  expect(figures.delivered).toBe(150);
  expect(run.status).toBe(0);
}, 180_000);
