/** The CLI side of the admin API: one request, a typed answer, and a clear error when nobody listens. */

export class RelayUnreachable extends Error {}

export interface ApiAnswer<T> {
  status: number;
  body: T;
}

export class AdminClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
    private readonly timeoutMs = 30_000,
  ) {}

  async request<T>(method: 'GET' | 'POST' | 'DELETE', path: string): Promise<ApiAnswer<T>> {
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: this.token ? { authorization: `Bearer ${this.token}` } : {},
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw unreachable(this.baseUrl, err);
    }
    return { status: response.status, body: (await readBody(response)) as T };
  }
}

function unreachable(baseUrl: string, err: unknown): RelayUnreachable {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const code = cause?.code ?? cause?.message ?? (err as Error).message;
  return new RelayUnreachable(`cannot reach the relay's admin API at ${baseUrl} (${code})`);
}

/** The answer's JSON, or an error object quoting what came instead. */
async function readBody(response: Response): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { error: `unexpected answer (HTTP ${response.status}): ${text.slice(0, 200)}` };
  }
}

/**
 * A GET whose answer is one JSON value per line, handed over line by line as it arrives. Only the
 * wait for the answer to start is bounded: a search over a deep queue may stream for a while.
 */
export async function* streamLines(
  baseUrl: string,
  token: string | undefined,
  path: string,
  timeoutMs = 30_000,
): AsyncGenerator<unknown> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let response: Response;
  try {
    response = await fetch(`${baseUrl}${path}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: controller.signal,
    });
  } catch (err) {
    throw unreachable(baseUrl, err);
  } finally {
    clearTimeout(timer);
  }
  if (response.status !== 200 || !response.body) throw new Error(errorText(await readBody(response)));
  const decoder = new TextDecoder();
  let pending = '';
  for await (const chunk of response.body) {
    pending += decoder.decode(chunk as Uint8Array, { stream: true });
    let end: number;
    while ((end = pending.indexOf('\n')) !== -1) {
      const line = pending.slice(0, end);
      pending = pending.slice(end + 1);
      if (line.trim() !== '') yield JSON.parse(line) as unknown;
    }
  }
}

export function errorText(body: unknown): string {
  if (body && typeof body === 'object') {
    const record = body as { error?: unknown; errors?: unknown };
    if (typeof record.error === 'string') return record.error;
    if (Array.isArray(record.errors)) return record.errors.map(String).join('\n');
  }
  return JSON.stringify(body);
}
