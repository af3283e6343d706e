import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { loadConfigFile } from '../../src/config/load';
import type { SmtpSink } from '../../src/tools/sink';
import { baseConfig, buildConfig, startRelay, startSink, waitFor, type RunningRelay } from './harness';
import { message, openSession } from './smtp-client';

/**
 * A relay with a story to tell, for the trace and status page tests. Smart host `primary`
 * greylists ok@ (451: the message fails over to `backup`, which takes it); both hosts defer
 * later@ (the message waits in the queue) and refuse nobody@ for good (a bounce, and a DSN to the
 * sender); a stranger on 127.0.0.2 is refused at connect. `backup` has a quota, so the page has one
 * to show. The config is written to a file too, for the CLI.
 */
export interface TrafficRelay {
  running: RunningRelay;
  sinks: SmtpSink[];
  configFile: string;
  eventsFile: string;
  token: string;
  /** Every log line the relay wrote. */
  logLines: string[];
  ids: { delivered: string; bounced: string; deferred: string };
  messageIds: { delivered: string };
}

export const TRAFFIC_TOKEN = 'trace-test-token-0123456789abcdef';

const refusals = (own: Record<string, { code: number; message: string }>) => (address: string) => own[address] ?? null;

export async function startTrafficRelay(dir: string): Promise<TrafficRelay> {
  const both = {
    'later@example.com': { code: 451, message: '4.2.0 Mailbox busy, try later' },
    'nobody@example.com': { code: 550, message: '5.1.1 No such user here' },
  };
  const primary = await startSink({
    rcptReply: refusals({ ...both, 'ok@example.com': { code: 451, message: '4.7.1 Greylisted, try again later' } }),
  });
  const backup = await startSink({ rcptReply: refusals(both) });
  const eventsFile = path.join(dir, 'events.jsonl');
  const raw = baseConfig(
    dir,
    [
      { name: 'primary', port: primary.port, priority: 10 },
      { name: 'backup', port: backup.port, priority: 20, rate_limits: [{ window: '1h', messages: 100 }] },
    ],
    {
      spool: { dir: path.join(dir, 'spool'), retry: { initial: '10m', max: '1h', factor: 2 }, min_free_disk: 0 },
      http: { address: '127.0.0.1:0', token: TRAFFIC_TOKEN },
      events: { file: eventsFile },
    },
  );
  const logLines: string[] = [];
  const capture = new Writable({
    write: (chunk: Buffer, _encoding, done) => {
      logLines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  const running = await startRelay(buildConfig(raw, dir), { logger: pino({ level: 'info' }, capture) });
  // The CLI reads the same settings from a file: the http address with the port the relay got.
  const configFile = path.join(dir, 'relay.yaml');
  writeFileSync(
    configFile,
    stringify({ ...raw, http: { address: `127.0.0.1:${running.httpPort}`, token: TRAFFIC_TOKEN } }),
  );
  if (!loadConfigFile(configFile, {}).ok) throw new Error('traffic config file does not load');

  const send = async (to: string, messageId: string) => {
    const { client } = await openSession(running.smtpPort);
    const reply = await client.sendMessage('app@corp.example', [to], message({ to, messageId, subject: `for ${to}` }));
    await client.quit();
    if (!reply?.startsWith('250 ')) throw new Error(`not accepted: ${reply}`);
    return reply.split(' ').pop() as string;
  };
  const events = () => readFileSync(eventsFile, 'utf8');
  const delivered = await send('ok@example.com', 'invoice-4711@corp.example');
  const bounced = await send('nobody@example.com', 'invoice-4712@corp.example');
  const deferred = await send('later@example.com', 'invoice-4713@corp.example');
  const stranger = await openSession(running.smtpPort, { localAddress: '127.0.0.2' });
  await stranger.client.quit();
  try {
    await waitFor(
      () => {
        const text = events();
        return (
          text.includes(`"dsn_of":"${bounced}"`) &&
          text.includes(`"type":"deferred","queue_id":"${deferred}"`) &&
          text.includes(`"type":"delivered","queue_id":"${delivered}"`) &&
          text.includes('"type":"rejected"')
        );
      },
      20_000,
      'delivery, DSN, deferral and refusal in the events file',
    );
  } catch (err) {
    await running.stop();
    await Promise.all([primary.close(), backup.close()]);
    throw new Error(`${(err as Error).message}; events so far:\n${events()}`, { cause: err });
  }
  return {
    running,
    sinks: [primary, backup],
    configFile,
    eventsFile,
    token: TRAFFIC_TOKEN,
    logLines,
    ids: { delivered, bounced, deferred },
    messageIds: { delivered: '<invoice-4711@corp.example>' },
  };
}
