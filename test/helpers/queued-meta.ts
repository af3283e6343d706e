import type { MessageMeta, RecipientState } from '../../src/spool/message';

/** Recipients not yet attempted, as the spool stores them at commit. */
export function pending(...addresses: string[]): RecipientState[] {
  return addresses.map((address) => ({ address, status: 'pending' }));
}

/**
 * The metadata of a message a trusted LAN app (client `lan`, listener `smtp`, 127.0.0.1) handed in
 * for the default route, never attempted and due now, as the spool commits it: a test states only
 * what it is about (`extra` wins: times, recipients, version, attempts, …).
 */
export function queuedMeta(id: string, size: number, extra: Partial<MessageMeta> = {}): MessageMeta {
  const now = Date.now();
  return {
    version: 2,
    id,
    receivedAt: now,
    client: 'lan',
    listener: 'smtp',
    remote: '127.0.0.1',
    route: 'default',
    from: 'app@corp.example',
    recipients: pending('user@example.com'),
    size,
    attempts: 0,
    nextAttemptAt: now,
    ...extra,
  };
}
