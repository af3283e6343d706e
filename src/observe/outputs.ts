import type { EventsConfig } from '../config/schema';
import { RotatingEventFile, type EventOutput } from './event-file';
import type { Logger } from './logger';
import type { Metrics } from './metrics';
import { WebhookOutput } from './webhook';

/** The event outputs `events` asks for, each reporting its drops as a metric and a log line. */
export function buildEventOutputs(
  events: EventsConfig | undefined,
  deps: { metrics: Metrics; logger: Logger },
): EventOutput[] {
  if (!events) return [];
  const { metrics, logger } = deps;
  const outputs: EventOutput[] = [];
  if (events.file !== undefined) {
    const file = events.file;
    outputs.push(
      new RotatingEventFile({
        file,
        maxSize: events.max_size,
        keep: events.keep,
        onDrop: (count) => metrics.eventsDroppedBy('file', count),
        onError: (err) => logger.error({ err }, `events file ${file}: ${err.message}`),
      }),
    );
  }
  if (events.webhook) {
    // Only the origin is ever logged: a URL may carry credentials or a token in its path or query.
    const origin = new URL(events.webhook.url).origin;
    outputs.push(
      new WebhookOutput(events.webhook, {
        onDrop: (count, why) => {
          metrics.eventsDroppedBy('webhook', count);
          logger.warn({ event: 'webhook_drop', count }, `events webhook ${origin}: dropped ${count} event(s): ${why}`);
        },
        onFailure: (attempt, why) =>
          logger.debug(
            { event: 'webhook_failure', attempt },
            `events webhook ${origin}: attempt ${attempt} failed: ${why}`,
          ),
      }),
    );
  }
  return outputs;
}
