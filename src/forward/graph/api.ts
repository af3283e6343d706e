import type { HttpAnswer, HttpsClient } from './http';
import type { GraphTokens } from './token';

/**
 * A Graph answer that is not the success a step waited for: the send stops there, and the answer
 * becomes the outcome (replies.ts).
 */
export class GraphRefusal extends Error {
  constructor(readonly answer: HttpAnswer) {
    super(`Microsoft Graph answered ${answer.status}`);
  }
}

export interface GraphBody {
  contentType: string;
  data: Buffer | string;
}

/**
 * The Graph calls of one send. Each carries the host's bearer token; a 401 renews it once for the
 * whole send (a token revoked or expired early) and repeats that call, and a second 401 is the
 * answer.
 */
export class GraphCalls {
  private renewed = false;

  constructor(
    private readonly http: HttpsClient,
    private readonly tokens: GraphTokens,
    private readonly graphUrl: string,
  ) {}

  /**
   * `path` below the Graph URL, e.g. `/users/relay%40corp.example/sendMail`. Throws GraphRefusal
   * unless the answer is `expect`.
   */
  async call(method: 'GET' | 'POST' | 'DELETE', path: string, expect: number, body?: GraphBody): Promise<HttpAnswer> {
    let answer = await this.once(method, path, body, false);
    if (answer.status === 401 && !this.renewed) {
      this.renewed = true;
      answer = await this.once(method, path, body, true);
    }
    if (answer.status !== expect) throw new GraphRefusal(answer);
    return answer;
  }

  private async once(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    body: GraphBody | undefined,
    renew: boolean,
  ): Promise<HttpAnswer> {
    const token = await this.tokens.get(renew);
    return this.http.send(`${this.graphUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token.value}`,
        accept: 'application/json',
        ...(body ? { 'content-type': body.contentType } : {}),
      },
      ...(body ? { body: body.data } : {}),
    });
  }
}

/** `/users/{id | userPrincipalName}`: the mailbox that sends. */
export function userPath(mailbox: string): string {
  return `/users/${encodeURIComponent(mailbox)}`;
}
