import { readFileSync } from 'node:fs';
import type { SmartHostConfig } from '../config/schema';

/**
 * The CA bundle a smart host's certificate is checked against, read where the config is applied so
 * that a missing file stops `smarthop start` (and a reload) with its name, not a later delivery.
 * A module of its own: the event loop needs it without loading nodemailer, which only sends.
 */
export function loadCa(config: SmartHostConfig): Buffer | undefined {
  return config.ca !== undefined ? readFileSync(config.ca) : undefined;
}
