import { createSocket, type Socket } from 'node:dgram';
import * as dnsPacket from 'dns-packet';

export type Zone = Record<string, Partial<Record<'TXT' | 'A' | 'AAAA', string[]>>>;

const NXDOMAIN = 3;

/**
 * A tiny authoritative DNS server on loopback UDP, for `smarthop doctor --dns 127.0.0.1:PORT`:
 * answers TXT, A and AAAA from a fixed zone, NXDOMAIN for unknown names, an empty answer for a
 * known name without that type. Tests never ask the internet.
 */
export class TestDnsServer {
  private readonly socket: Socket = createSocket('udp4');
  private readonly zone: Map<string, Zone[string]>;
  port = 0;

  constructor(zone: Zone) {
    this.zone = new Map(Object.entries(zone).map(([name, records]) => [name.toLowerCase(), records]));
    this.socket.on('message', (message, peer) => {
      let query: dnsPacket.DecodedPacket;
      try {
        query = dnsPacket.decode(message);
      } catch {
        return;
      }
      const question = query.questions?.[0];
      if (!question) return;
      const records = this.zone.get(question.name.toLowerCase().replace(/\.$/, ''));
      const answers: dnsPacket.Answer[] = [];
      if (records && (question.type === 'TXT' || question.type === 'A' || question.type === 'AAAA')) {
        for (const value of records[question.type] ?? []) {
          // A TXT character-string holds at most 255 bytes: long records (RSA keys) come in pieces, as in real zones.
          if (question.type === 'TXT')
            answers.push({ type: 'TXT', name: question.name, ttl: 60, data: value.match(/.{1,255}/g) ?? [''] });
          else answers.push({ type: question.type, name: question.name, ttl: 60, data: value });
        }
      }
      const response = dnsPacket.encode({
        type: 'response',
        id: query.id,
        flags: dnsPacket.AUTHORITATIVE_ANSWER | (records ? 0 : NXDOMAIN),
        questions: [question],
        answers,
      });
      this.socket.send(response, peer.port, peer.address);
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.socket.bind(0, '127.0.0.1', resolve));
    this.port = this.socket.address().port;
    return this.port;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}
