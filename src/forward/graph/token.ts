import {
  constants,
  createHash,
  createPrivateKey,
  randomUUID,
  sign,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { GraphSmartHostConfig } from '../../config/schema';
import { isInlinePem } from '../../config/pem';
import { TokenCache, tokenLifetimeMs, type AccessToken } from '../oauth2';
import { aadstsAdvice, aadstsCode } from './advice';
import { HttpFailure, printableUrl, type HttpsClient } from './http';

/**
 * Access tokens for Graph from the Microsoft identity platform's client-credentials grant, with a
 * client secret or a certificate (a client assertion: a JWT signed with the certificate's key, as
 * Microsoft's "certificate credentials" page describes: PS256, `x5t#S256` naming the certificate).
 */

export type GraphCredential =
  { kind: 'secret'; secret: string } | { kind: 'certificate'; key: KeyObject; thumbprint: string };

/**
 * The token endpoint refused this relay's credentials (a 4xx with an OAuth error): an admin's
 * mistake, never mended by asking again. `aadsts` is Microsoft's code for it, when it gave one.
 */
export class CredentialsRefused extends Error {
  constructor(
    message: string,
    readonly aadsts: string | undefined,
  ) {
    super(message);
  }
}

function pemOf(value: string): string {
  return isInlinePem(value) ? value : readFileSync(value, 'utf8');
}

/**
 * The credential of a Graph host, read where the config is applied: a missing file, a key that is
 * not the certificate's, or a key PS256 cannot use stops the start (or the reload) with its name.
 */
export function loadCredential(config: GraphSmartHostConfig): GraphCredential {
  if (config.client_secret !== undefined) return { kind: 'secret', secret: config.client_secret };
  if (config.certificate === undefined) {
    throw new Error(`smart host ${config.name}: needs client_secret or certificate`);
  }
  const certificate = new X509Certificate(pemOf(config.certificate.cert));
  const key = createPrivateKey(pemOf(config.certificate.key));
  if (key.asymmetricKeyType !== 'rsa') {
    throw new Error(
      `smart host ${config.name}: certificate.key must be an RSA key (the assertion is signed with PS256)`,
    );
  }
  if (!certificate.checkPrivateKey(key)) {
    throw new Error(`smart host ${config.name}: certificate.key is not the private key of certificate.cert`);
  }
  return { kind: 'certificate', key, thumbprint: createHash('sha256').update(certificate.raw).digest('base64url') };
}

/** How long a client assertion is valid: Microsoft asks for 5 to 10 minutes after `nbf`. */
const ASSERTION_LIFETIME_S = 10 * 60;

/** A client assertion (RFC 7523) for `audience`, the token endpoint. */
export function clientAssertion(
  clientId: string,
  audience: string,
  credential: Extract<GraphCredential, { kind: 'certificate' }>,
  now: number,
): string {
  const issuedAt = Math.floor(now / 1000);
  const encode = (value: object) => Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
  const header = encode({ alg: 'PS256', typ: 'JWT', 'x5t#S256': credential.thumbprint });
  const claims = encode({
    aud: audience,
    iss: clientId,
    sub: clientId,
    jti: randomUUID(),
    nbf: issuedAt,
    iat: issuedAt,
    exp: issuedAt + ASSERTION_LIFETIME_S,
  });
  const signature = sign('sha256', Buffer.from(`${header}.${claims}`, 'ascii'), {
    key: credential.key,
    padding: constants.RSA_PKCS1_PSS_PADDING,
    saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
  });
  return `${header}.${claims}.${signature.toString('base64url')}`;
}

function json(body: Buffer): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(body.toString('utf8'));
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** `invalid_client: AADSTS7000215: Invalid client secret provided. … → copy the secret's Value …` on one line. */
function describeRefusal(answer: Record<string, unknown>, status: number): string {
  const description =
    typeof answer.error_description === 'string' ? answer.error_description.split(/\r?\n/)[0].trim() : '';
  const advice = aadstsAdvice(aadstsCode(answer));
  const what = `${status} ${String(answer.error)}${description ? `: ${description}` : ''}`;
  return `the token endpoint refused the credentials (${what})${advice ? `; to fix: ${advice}` : ''}`;
}

export class GraphTokens {
  private readonly cache: TokenCache;

  constructor(
    private readonly config: Pick<GraphSmartHostConfig, 'client_id' | 'token_url' | 'scope'>,
    private readonly http: HttpsClient,
    private readonly credential: GraphCredential,
    private readonly now: () => number = Date.now,
  ) {
    this.cache = new TokenCache(() => this.fetchToken(), now);
  }

  /** The cached token while fresh; `renew` after Graph refused it (401). Throws CredentialsRefused or HttpFailure. */
  get(renew = false): Promise<AccessToken> {
    return this.cache.get(renew);
  }

  private async fetchToken(): Promise<{ value: string; lifetimeMs: number }> {
    const { client_id, token_url, scope } = this.config;
    const form = new URLSearchParams({ grant_type: 'client_credentials', client_id, scope });
    if (this.credential.kind === 'secret') {
      form.set('client_secret', this.credential.secret);
    } else {
      form.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      form.set('client_assertion', clientAssertion(client_id, token_url, this.credential, this.now()));
    }
    const answer = await this.http.send(token_url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: form.toString(),
    });
    const body = json(answer.body);
    if (answer.status === 200 && typeof body.access_token === 'string' && body.access_token !== '') {
      return { value: body.access_token, lifetimeMs: tokenLifetimeMs(body.expires_in) };
    }
    // An OAuth error in a 4xx is a verdict on the request's credentials; a 408, a 429 or a 5xx is
    // the endpoint's own trouble.
    if (
      answer.status >= 400 &&
      answer.status < 500 &&
      answer.status !== 408 &&
      answer.status !== 429 &&
      typeof body.error === 'string'
    ) {
      throw new CredentialsRefused(describeRefusal(body, answer.status), aadstsCode(body));
    }
    const what =
      typeof body.error === 'string' ? ` (${body.error})` : answer.status === 200 ? ' without an access_token' : '';
    throw new HttpFailure('connect', `the token endpoint ${printableUrl(token_url)} answered ${answer.status}${what}`);
  }
}
