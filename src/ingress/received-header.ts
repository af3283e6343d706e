import { rfc5322Date } from '../message/date';

/** Our own `Received:` line for the inbound hop (RFC 5321 §4.4), built purely from the session. */

export interface ReceivedInfo {
  heloName: string;
  clientName: string;
  hostname: string;
  queueId: string;
  secure: boolean;
  authenticated: boolean;
  esmtp: boolean;
  tls?: { version: string; cipher: string };
  /** Named only where the route asks for it (`received_include_address`): LAN addresses are topology. */
  remoteAddress?: string;
  /** Named only for a single recipient, as Postfix does: a list would disclose Bcc recipients. */
  recipients: string[];
  date: Date;
}

/** The HELO name is client-supplied: keep it printable and bounded before it enters a header. */
function sanitizeHelo(name: string): string {
  const clean = name.replace(/[^\x21-\x7e]/g, '').slice(0, 255);
  return clean === '' ? 'unknown' : clean;
}

export function buildReceivedHeader(info: ReceivedInfo): string {
  const protocol = `${info.esmtp ? 'ESMTP' : 'SMTP'}${info.secure ? 'S' : ''}${info.authenticated ? 'A' : ''}`;
  const address = info.remoteAddress === undefined ? '' : ` [${info.remoteAddress.replace(/^::ffff:(?=\d+\.)/, '')}]`;
  const lines = [`Received: from ${sanitizeHelo(info.heloName)} (client ${info.clientName}${address})`];
  if (info.tls) lines.push(`\t(using ${info.tls.version} with cipher ${info.tls.cipher})`);
  lines.push(`\tby ${info.hostname} (smarthop) with ${protocol} id ${info.queueId}`);
  const forClause =
    info.recipients.length === 1 ? `\tfor <${info.recipients[0].replace(/[\x00-\x1f\x7f<>]/g, '')}>` : '';
  if (forClause) lines.push(`${forClause}; ${rfc5322Date(info.date)}`);
  else lines[lines.length - 1] += `; ${rfc5322Date(info.date)}`;
  return `${lines.join('\r\n')}\r\n`;
}
