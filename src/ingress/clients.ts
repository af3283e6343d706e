import type { ClientConfig } from '../config/schema';
import { addressIn, parseAddress } from './networks';
import { verifyPassword } from './password';

/**
 * Who a session is: a credential client by AUTH username, or a network client by source address.
 * Anything else is nobody and relays nothing.
 */
export class ClientDirectory {
  private readonly byUsername = new Map<string, ClientConfig>();

  constructor(private readonly clients: readonly ClientConfig[]) {
    for (const client of clients) if (client.username !== undefined) this.byUsername.set(client.username, client);
  }

  /** The first client whose `networks` contain this address (an IPv4-mapped IPv6 address counts as IPv4). */
  byAddress(remoteAddress: string): ClientConfig | undefined {
    const address = parseAddress(remoteAddress);
    if (!address) return undefined;
    return this.clients.find((client) => addressIn(address, client.networks));
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
