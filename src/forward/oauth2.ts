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

/** `expires_in` of a token answer (seconds, as a number or a string) in ms; the default when absent or nonsense. */
export function tokenLifetimeMs(expiresIn: unknown): number {
  const seconds = typeof expiresIn === 'number' ? expiresIn : Number(expiresIn ?? DEFAULT_LIFETIME_S);
  return (Number.isFinite(seconds) && seconds > 0 ? seconds : DEFAULT_LIFETIME_S) * 1000;
}

/**
 * One access token shared by everything that sends for a smart host: fetched once, handed out
 * while fresh, fetched again before it lapses or when a server refused it (`renew`). Callers that
 * ask together while a fetch is under way share that one request.
 */
export class TokenCache {
  private token: AccessToken | null = null;
  private inflight: Promise<AccessToken> | null = null;

  constructor(
    private readonly fetchToken: () => Promise<{ value: string; lifetimeMs: number }>,
    private readonly now: () => number = Date.now,
  ) {}

  async get(renew = false): Promise<AccessToken> {
    if (!renew && this.token && this.now() < this.token.refreshAt) return this.token;
    this.inflight ??= this.obtain().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async obtain(): Promise<AccessToken> {
    const obtainedAt = this.now();
    const { value, lifetimeMs } = await this.fetchToken();
    this.token = { value, expiresAt: obtainedAt + lifetimeMs, refreshAt: refreshTime(obtainedAt, lifetimeMs) };
    return this.token;
  }
}

export interface TokenSourceOptions {
  timeoutMs: number;
  now?: () => number;
}

export class ClientCredentialsTokens {
  private readonly cache: TokenCache;

  constructor(
    private readonly config: OAuth2Config,
    private readonly options: TokenSourceOptions,
  ) {
    this.cache = new TokenCache(() => this.fetchToken(), options.now);
  }

  /** The cached token while it is fresh; `renew` when the SMTP server refused it (revoked early). */
  get(renew = false): Promise<AccessToken> {
    return this.cache.get(renew);
  }

  private async fetchToken(): Promise<{ value: string; lifetimeMs: number }> {
    const { token_url, client_id, client_secret, scope } = this.config;
    const body = new URLSearchParams({ grant_type: 'client_credentials', client_id, client_secret });
    if (scope !== undefined) body.set('scope', scope);
    let response: Response;
    try {
      response = await fetch(token_url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body,
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
    } catch (err) {
      throw new Error(`OAuth2 token endpoint ${token_url} unreachable: ${(err as Error).message}`, { cause: err });
    }
    const text = await response.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      // Reported below with the status; the body of an error page is not worth quoting.
    }
    if (!response.ok || typeof json.access_token !== 'string' || json.access_token === '') {
      const reason =
        typeof json.error === 'string'
          ? `${json.error}` +
            (typeof json.error_description === 'string' ? `: ${json.error_description.split('\n')[0]}` : '')
          : 'no access_token in the answer';
      throw new Error(`OAuth2 token endpoint ${token_url} answered ${response.status} (${reason})`);
    }
    return { value: json.access_token, lifetimeMs: tokenLifetimeMs(json.expires_in) };
  }
}
