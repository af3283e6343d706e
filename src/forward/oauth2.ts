import type { OAuth2Config } from '../config/schema';

/**
 * Access tokens for XOAUTH2 from the OAuth2 client-credentials flow (RFC 6749 §4.4), as Microsoft
 * 365 and Google expect of a daemon that sends mail for a mailbox. One token per smart host is
 * cached and shared by every pooled connection, and refreshed before it expires.
 */

export interface AccessToken {
  value: string;
  /** When the token stops being valid (ms since epoch). */
  expiresAt: number;
  /** When to fetch the next one, comfortably before expiry. */
  refreshAt: number;
}

/** At most this long before expiry a token is replaced (MSAL's margin); short-lived tokens at half-life. */
const REFRESH_MARGIN_MS = 5 * 60_000;

/** Pure: when a token obtained at `obtainedAt` and valid for `lifetimeMs` should be replaced. */
export function refreshTime(obtainedAt: number, lifetimeMs: number): number {
  return obtainedAt + Math.max(lifetimeMs - REFRESH_MARGIN_MS, lifetimeMs / 2);
}

/** The lifetime to assume when the endpoint does not say (`expires_in` is only RECOMMENDED). */
const DEFAULT_LIFETIME_S = 3600;

export interface TokenSourceOptions {
  timeoutMs: number;
  now?: () => number;
}

export class ClientCredentialsTokens {
  private token: AccessToken | null = null;
  private inflight: Promise<AccessToken> | null = null;
  private readonly now: () => number;

  constructor(
    private readonly config: OAuth2Config,
    private readonly options: TokenSourceOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  /** The cached token while it is fresh; `renew` when the SMTP server refused it (revoked early). */
  async get(renew = false): Promise<AccessToken> {
    if (!renew && this.token && this.now() < this.token.refreshAt) return this.token;
    // Connections opening together share one request instead of each asking the endpoint.
    this.inflight ??= this.fetchToken().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async fetchToken(): Promise<AccessToken> {
    const { token_url, client_id, client_secret, scope } = this.config;
    const body = new URLSearchParams({ grant_type: 'client_credentials', client_id, client_secret });
    if (scope !== undefined) body.set('scope', scope);
    const obtainedAt = this.now();
    let response: Response;
    try {
      response = await fetch(token_url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body,
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
    } catch (err) {
      throw new Error(`OAuth2 token endpoint ${token_url} unreachable: ${(err as Error).message}`);
    }
    const text = await response.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      // Reported below with the status; the body of an error page is not worth quoting.
    }
    if (!response.ok || typeof json.access_token !== 'string' || json.access_token === '') {
      const reason = typeof json.error === 'string' ? `${json.error}${typeof json.error_description === 'string' ? `: ${json.error_description.split('\n')[0]}` : ''}` : 'no access_token in the answer';
      throw new Error(`OAuth2 token endpoint ${token_url} answered ${response.status} (${reason})`);
    }
    const lifetimeS = typeof json.expires_in === 'number' ? json.expires_in : Number(json.expires_in ?? DEFAULT_LIFETIME_S);
    const lifetimeMs = (Number.isFinite(lifetimeS) && lifetimeS > 0 ? lifetimeS : DEFAULT_LIFETIME_S) * 1000;
    this.token = { value: json.access_token, expiresAt: obtainedAt + lifetimeMs, refreshAt: refreshTime(obtainedAt, lifetimeMs) };
    return this.token;
  }
}
