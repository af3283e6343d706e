import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { onInterrupt } from '../interrupt';

/**
 * Postfix's smtp-source as the load generator for both relays, so neither side is measured with a
 * client written for it. Without -d it opens one connection per message (connect, HELO, MAIL,
 * RCPT, DATA, QUIT), like a LAN application handing over one mail at a time. Without -A it gives up
 * at the first reply that is not the expected positive one, so exit 0 means every message got its 250.
 */

export interface SmtpSourceLoad {
  messages: number;
  /** Parallel sessions (-s). */
  sessions: number;
  /** Body bytes (-l); smtp-source adds its own From/To/Date/Message-Id headers (about 130 bytes). */
  payloadBytes: number;
  from: string;
  /** Base recipient; -N turns it into 1rcpt@…, 2rcpt@…, so the sink can count every message. */
  to: string;
  heloName: string;
}

export interface SmtpSourceResult {
  exitCode: number | null;
  signal: string | null;
  /** From spawn to exit: every message was handed over and acknowledged (when exitCode is 0). */
  durationMs: number;
  startedAt: number;
  timedOut: boolean;
  /** The last few KiB of what it printed (it only prints on errors). */
  output: string;
}

const OUTPUT_KEEP_BYTES = 4096;

export function smtpSourceArgs(load: SmtpSourceLoad, port: number): string[] {
  return [
    '-s',
    String(load.sessions),
    '-m',
    String(load.messages),
    '-l',
    String(load.payloadBytes),
    '-N',
    '-M',
    load.heloName,
    '-f',
    load.from,
    '-t',
    load.to,
    `127.0.0.1:${port}`, // loopback only, whatever the caller passes
  ];
}

/** Runs smtp-source to completion, killing it (by its pid) after `timeoutMs`. */
export function runSmtpSource(
  binary: string,
  load: SmtpSourceLoad,
  port: number,
  timeoutMs: number,
): Promise<SmtpSourceResult> {
  return new Promise((resolve) => {
    const startedAt = performance.now();
    const child = spawn(binary, smtpSourceArgs(load, port), { stdio: ['ignore', 'pipe', 'pipe'] });
    const forget = onInterrupt(() => child.kill('SIGKILL'));
    let output = '';
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString('latin1')).slice(-OUTPUT_KEEP_BYTES);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const finish = (exitCode: number | null, signal: string | null) => {
      clearTimeout(timer);
      forget();
      resolve({
        exitCode,
        signal,
        durationMs: performance.now() - startedAt,
        startedAt,
        timedOut,
        output: output.trim(),
      });
    };
    child.once('error', (err) => {
      keep(Buffer.from(err.message));
      finish(null, null);
    });
    child.once('close', (code, signal) => finish(code, signal));
  });
}
