import type { SmtpSmartHostConfig } from '../config/schema';
import type { Outcome } from './outcome';
import type { Envelope, MessageBody } from './smarthost';

/**
 * The messages between the relay's event loop and its delivery thread. Only plain data crosses:
 * the thread owns the smart-host connections, the event loop owns every decision about a message
 * (breaker, quota, spool state), so a send is a queue file's path in and an outcome per recipient out.
 */
export type ToDeliveryThread =
  /** `ca`: the CA file's contents, read on the event loop so a missing file fails start and reload there. */
  | { type: 'open'; host: number; config: SmtpSmartHostConfig; heloName: string; ca?: Uint8Array }
  | { type: 'send'; request: number; host: number; envelope: Envelope; body: MessageBody }
  | { type: 'close'; host: number }
  /** What the thread's V8 heap holds now (for /metrics). */
  | { type: 'heap'; request: number };

export type FromDeliveryThread =
  | { type: 'sent'; request: number; outcomes: [string, Outcome][] }
  /** The send threw instead of returning outcomes: a bug, reported as a temporary failure. */
  | { type: 'failed'; request: number; message: string }
  | { type: 'heap'; request: number; spaces: HeapSpace[] };

/** One V8 heap space of the thread (`new_space`, `old_space` …): bytes committed and bytes in use. */
export interface HeapSpace {
  space: string;
  size: number;
  used: number;
}
