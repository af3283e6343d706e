import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * JSON lines on stdout (or a given destination). Secrets never reach the logger in the first place;
 * the redaction list is a second line of defence for fields that could carry one.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'smarthop' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ['password', 'pass', 'token', 'secret', 'auth.pass', '*.password', '*.pass', '*.token', '*.secret'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
