import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, renameSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import * as path from 'node:path';

/**
 * One spool, one writer. The lock is a Unix socket, `<spool.dir>/lock.sock`, that its holder
 * listens on for as long as it runs: the relay for its whole life, an offline `smarthop queue`
 * command for its few file operations.
 *
 * Why a socket and not a pid file: the kernel closes a listening socket when its process ends,
 * however it ends (kill -9 included), so "is somebody holding it" is a connect() that either
 * reaches the holder or is refused. A pid file would have to guess from a pid that may have been
 * reused (after a reboot, or in a container, where the relay is pid 1 every time) and cannot see a
 * process in another container that shares the spool volume; a connect reaches it. Node has no
 * flock(2), and the npm packages that add it are native addons the container build cannot compile.
 * A socket file left behind by a killed holder is stale: it is taken over (see `takeOverStale`).
 *
 * The holder answers every connection with one JSON line naming itself, so a refused start can say
 * who holds the spool.
 */

export const LOCK_FILE = 'lock.sock';

/** Who holds a spool, as the holder describes itself. */
export interface LockHolder {
  pid: number;
  /** `relay` for `smarthop start`, `cli` for an offline queue command. */
  role: string;
  started_at: string;
}

export class SpoolInUse extends Error {
  constructor(
    readonly spoolDir: string,
    readonly holder: LockHolder | null,
  ) {
    super(
      holder
        ? `spool ${spoolDir} is in use by ` +
            (holder.role === 'relay' ? 'a running relay' : 'a smarthop queue command') +
            ` (pid ${holder.pid}, since ${holder.started_at}); ` +
            'one spool has one relay: stop that one first, or give this one another spool.dir'
        : `spool ${spoolDir} is in use by another process that holds ${path.join(spoolDir, LOCK_FILE)}`,
    );
  }
}

/** A socket path (sun_path) holds at most 107 bytes on Linux. */
const MAX_SOCKET_PATH = 107;
const PROBE_TIMEOUT_MS = 2000;
/** Take-over attempts before giving up: each lost race means another process got there first. */
const MAX_TRIES = 5;

export class SpoolLock {
  private constructor(
    readonly spoolDir: string,
    private readonly server: Server,
  ) {}

  /**
   * Takes the lock of `spoolDir` (creating the folder if needed) or throws SpoolInUse. Nothing else
   * in the spool is touched before this returns.
   */
  static async acquire(spoolDir: string, role: string): Promise<SpoolLock> {
    mkdirSync(spoolDir, { recursive: true });
    const file = socketPath(spoolDir);
    const holder: LockHolder = { pid: process.pid, role, started_at: new Date().toISOString() };
    const answer = `${JSON.stringify(holder)}\n`;
    for (let tries = 0; tries < MAX_TRIES; tries++) {
      const server = createServer((socket) => {
        socket.on('error', () => undefined);
        socket.end(answer);
      });
      const listening = await listen(server, file);
      if (listening === 'ok') return new SpoolLock(spoolDir, server);
      if (listening !== 'EADDRINUSE') throw new Error(`cannot lock spool ${spoolDir}: ${listening}`);
      const probe = await probeHolder(file);
      if (probe.kind === 'held') throw new SpoolInUse(spoolDir, probe.holder);
      if (probe.kind === 'unknown') throw new Error(`cannot tell whether spool ${spoolDir} is in use: ${probe.reason}`);
      if (probe.kind === 'stale') await takeOverStale(file);
      // 'gone': the file vanished between listen and probe; try again.
    }
    throw new Error(`cannot lock spool ${spoolDir}: other processes kept taking it over`);
  }

  /** Stops listening; Node removes the socket file as it closes. */
  release(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** The socket's path, relative to the working directory when the absolute one is too long for a socket. */
function socketPath(spoolDir: string): string {
  const absolute = path.resolve(spoolDir, LOCK_FILE);
  if (Buffer.byteLength(absolute) <= MAX_SOCKET_PATH) return absolute;
  const relative = path.relative(process.cwd(), absolute);
  if (Buffer.byteLength(relative) <= MAX_SOCKET_PATH) return relative;
  throw new Error(
    `spool.dir ${spoolDir} is too long a path for its lock socket ` +
      `(${absolute} is over ${MAX_SOCKET_PATH} bytes): use a shorter spool.dir`,
  );
}

function listen(server: Server, file: string): Promise<'ok' | string> {
  return new Promise((resolve) => {
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    server.listen(file, () => resolve('ok'));
  });
}

type Probe =
  | { kind: 'held'; holder: LockHolder | null }
  | { kind: 'stale' }
  | { kind: 'gone' }
  | { kind: 'unknown'; reason: string };

/** Connects to the lock socket: a holder answers with its description, a stale socket refuses. */
function probeHolder(file: string): Promise<Probe> {
  return new Promise((resolve) => {
    const socket = connect(file);
    let text = '';
    let connected = false;
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ kind: 'held', holder: null });
    }, PROBE_TIMEOUT_MS);
    socket.setEncoding('utf8');
    socket.on('connect', () => (connected = true));
    socket.on('data', (chunk: string) => {
      if (text.length < 4096) text += chunk;
    });
    socket.on('end', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ kind: 'held', holder: parseHolder(text) });
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (connected) return resolve({ kind: 'held', holder: parseHolder(text) });
      if (err.code === 'ECONNREFUSED') return resolve({ kind: 'stale' });
      if (err.code === 'ENOENT') return resolve({ kind: 'gone' });
      resolve({ kind: 'unknown', reason: `${err.code ?? ''} ${err.message}`.trim() });
    });
  });
}

function parseHolder(text: string): LockHolder | null {
  try {
    const parsed = JSON.parse(text.split('\n')[0]) as Partial<LockHolder>;
    if (typeof parsed.pid === 'number' && typeof parsed.role === 'string' && typeof parsed.started_at === 'string')
      return parsed as LockHolder;
  } catch {
    // not a holder's answer
  }
  return null;
}

/**
 * Removes a stale socket file so the next listen can take its place. Two starters may both find the
 * same stale file; unlinking by name could then remove the socket the faster one just bound. So the
 * file is first renamed to a name of our own (only one of them gets the stale inode), probed again
 * there, and put back with link() (which never replaces) if it turns out to be live after all.
 */
async function takeOverStale(file: string): Promise<void> {
  const aside = `${file}.${randomBytes(4).toString('hex')}.stale`;
  try {
    renameSync(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const probe = await probeHolder(aside);
  if (probe.kind === 'held') {
    // A live socket another starter bound in between: give it its name back.
    try {
      linkSync(aside, file);
    } catch {
      // Someone bound a new one meanwhile; that one holds the lock.
    }
  }
  try {
    unlinkSync(aside);
  } catch {
    // already gone
  }
}
