import type { ClientConfig } from '../config/schema';
import { addressIn, parseAddress } from './networks';
import { verifyPassword } from './password';

/**
 * Distinct source addresses whose answer a directory remembers. LAN senders are a handful of hosts;
 * past this many (a scan from many addresses) the memory starts over rather than growing.
 */
export const ADDRESS_MEMO_LIMIT = 1024;

/**
 * Who a session is: a credential client by AUTH username, or a network client by source address.
 * Anything else is nobody and relays nothing.
 */
export class ClientDirectory {
  private readonly byUsername = new Map<string, ClientConfig>();
  /**
   * byAddress runs at connect and again at every MAIL, RCPT and DATA (a reload may have changed the
   * clients), and parsing the address was ~6 KB of garbage per message. The answer for an address
   * never changes for one directory (a reload builds a new one), so each address is parsed once.
   * null: no client has it.
   */
  private readonly addressMemo = new Map<string, ClientConfig | null>();

  constructor(private readonly clients: readonly ClientConfig[]) {
    for (const client of clients) if (client.username !== undefined) this.byUsername.set(client.username, client);
  }

  /** The first client whose `networks` contain this address (an IPv4-mapped IPv6 address counts as IPv4). */
  byAddress(remoteAddress: string): ClientConfig | undefined {
    const known = this.addressMemo.get(remoteAddress);
    if (known !== undefined) return known ?? undefined;
    const address = parseAddress(remoteAddress);
    const client = address ? this.clients.find((candidate) => addressIn(address, candidate.networks)) : undefined;
    if (this.addressMemo.size >= ADDRESS_MEMO_LIMIT) this.addressMemo.clear();
    this.addressMemo.set(remoteAddress, client ?? null);
    return client;
  }

  /**
   * The credential client that is still configured under this name and username (after a reload);
   * undefined when it was removed or its username changed, so the session must AUTH again.
   */
  byName(name: string, username: string | undefined): ClientConfig | undefined {
    if (username === undefined) return undefined;
    const client = this.byUsername.get(username);
    return client?.name === name ? client : undefined;
  }

  /** The credential client for a username and password, or undefined (in constant time either way). */
  async authenticate(username: string, password: string): Promise<ClientConfig | undefined> {
    const client = this.byUsername.get(username);
    const ok = await verifyPassword(password, client?.password_hash);
    return ok ? client : undefined;
  }
}
