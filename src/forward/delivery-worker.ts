import { getHeapSpaceStatistics } from 'node:v8';
import { parentPort } from 'node:worker_threads';
import type { FromDeliveryThread, ToDeliveryThread } from './delivery-protocol';
import { NodemailerSmartHost } from './smarthost';

/**
 * The delivery thread's entry point (see delivery-thread.ts): it holds the pooled smart-host
 * connections and sends what the event loop asks, so composing, dot-stuffing and writing
 * messages to smart hosts runs on a second core while the event loop keeps answering clients.
 */

const port = parentPort;
if (!port) throw new Error('delivery-worker must run as a worker thread');

const hosts = new Map<number, NodemailerSmartHost>();
/** Hosts whose transport could not be built: their sends fail (deferred) with the reason. */
const broken = new Map<number, string>();

function reply(message: FromDeliveryThread): void {
  port?.postMessage(message);
}

port.on('message', (message: ToDeliveryThread) => {
  switch (message.type) {
    case 'open':
      try {
        // The file was read by the event loop (a CA is a few KB); it arrives as a Uint8Array.
        const ca = message.ca
          ? Buffer.from(message.ca.buffer, message.ca.byteOffset, message.ca.byteLength)
          : undefined;
        hosts.set(message.host, new NodemailerSmartHost(message.config, message.heloName, ca));
      } catch (err) {
        broken.set(message.host, `cannot set up ${message.config.name}: ${(err as Error).message}`);
      }
      return;
    case 'close':
      hosts.get(message.host)?.close();
      hosts.delete(message.host);
      broken.delete(message.host);
      return;
    case 'heap':
      reply({
        type: 'heap',
        request: message.request,
        spaces: getHeapSpaceStatistics().map((space) => ({
          space: space.space_name,
          size: space.space_size,
          used: space.space_used_size,
        })),
      });
      return;
    case 'send': {
      const host = hosts.get(message.host);
      if (!host) {
        reply({
          type: 'failed',
          request: message.request,
          message: broken.get(message.host) ?? `smart host #${message.host} is not open in the delivery thread`,
        });
        return;
      }
      host.send(message.envelope, message.body).then(
        (outcomes) => reply({ type: 'sent', request: message.request, outcomes: [...outcomes] }),
        (err: Error) => reply({ type: 'failed', request: message.request, message: err.message }),
      );
      return;
    }
  }
});
