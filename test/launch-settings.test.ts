import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { RELAY_ENVIRONMENT, RELAY_NODE_FLAGS, relayEnvironment } from '../src/lifecycle/launch-settings';

/**
 * The relay's memory settings only work when node is started with them, so every way this project
 * starts the relay must carry the same ones: npm start (the quick start), the systemd unit and the
 * Docker image. The bench and the tests' child relays import the list itself.
 */

const root = path.resolve(__dirname, '..');
const read = (file: string): string => readFileSync(path.join(root, file), 'utf8');

interface Launch {
  environment: Record<string, string>;
  nodeFlags: string[];
}

/**
 * `A=1 B=2 [exec] node --flag dist/src/cli.js start …` (npm start execs node, so its pid is the relay's
 * parent's signal target)
 */
function fromShellCommand(command: string): Launch {
  const words = command.trim().split(/\s+/);
  const environment: Record<string, string> = {};
  let i = 0;
  for (; i < words.length && /^\w+=/.test(words[i]); i++) {
    const [name, value] = words[i].split('=', 2);
    environment[name] = value;
  }
  if (words[i] === 'exec') i++;
  expect(path.basename(words[i])).toBe('node');
  const nodeFlags: string[] = [];
  for (i++; i < words.length && words[i].startsWith('-'); i++) nodeFlags.push(words[i]);
  expect(words[i]).toMatch(/dist\/src\/cli\.js$/);
  return { environment, nodeFlags };
}

function fromSystemdUnit(unit: string): Launch {
  const environment: Record<string, string> = {};
  for (const [, assignment] of unit.matchAll(/^Environment=(.+)$/gm)) {
    const [name, value] = assignment.split('=', 2);
    environment[name] = value;
  }
  const execStart = /^ExecStart=(.+)$/m.exec(unit);
  expect(execStart).not.toBeNull();
  return { environment, nodeFlags: fromShellCommand(execStart![1]).nodeFlags };
}

function fromDockerfile(dockerfile: string): Launch {
  // The runtime stage is the last FROM; its ENV may continue over several lines.
  const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  const env = /^ENV ((?:.*\\\n)*.*)$/m.exec(runtime);
  expect(env).not.toBeNull();
  const environment: Record<string, string> = {};
  for (const [, name, value] of env![1].matchAll(/(\w+)=(\S+)/g)) environment[name] = value;
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(runtime);
  expect(entrypoint).not.toBeNull();
  const { nodeFlags } = fromShellCommand((JSON.parse(entrypoint![1]) as string[]).join(' '));
  return { environment, nodeFlags };
}

const packageJson = JSON.parse(read('package.json')) as { scripts: Record<string, string> };

describe.each([
  ['npm start', () => fromShellCommand(packageJson.scripts.start)],
  ['deploy/smarthop.service', () => fromSystemdUnit(read('deploy/smarthop.service'))],
  ['Dockerfile', () => fromDockerfile(read('Dockerfile'))],
])('%s', (_name, launch) => {
  it('starts node with the relay flags', () => {
    expect(launch().nodeFlags).toEqual(expect.arrayContaining([...RELAY_NODE_FLAGS]));
  });

  it('sets the relay environment', () => {
    expect(launch().environment).toMatchObject(RELAY_ENVIRONMENT);
  });
});

describe('relayEnvironment', () => {
  it('adds the defaults and lets the caller override them', () => {
    expect(relayEnvironment({ PATH: '/bin' })).toEqual({ PATH: '/bin', ...RELAY_ENVIRONMENT });
    expect(relayEnvironment({ MALLOC_ARENA_MAX: '4' }).MALLOC_ARENA_MAX).toBe('4');
  });
});
