import type { GraphSmartHostConfig } from '../config/schema';
import { graphAdvice } from '../forward/graph/advice';
import { GraphCalls, GraphRefusal, userPath } from '../forward/graph/api';
import { HttpFailure, HttpsClient } from '../forward/graph/http';
import { describeAnswer, graphError } from '../forward/graph/replies';
import { CredentialsRefused, GraphTokens, loadCredential } from '../forward/graph/token';
import { loadCa } from '../forward/smarthost-ca';
import type { Verdict } from './doctor';

/**
 * `smarthop doctor` for a Graph smart host: can the relay get a token with its credentials, and
 * does the mailbox it sends as exist for the app? Each failure says what to fix (AADSTS codes and
 * Graph error codes translated). Nothing is sent: the mailbox check reads the mailbox's Drafts
 * folder, which is also what messages over 4 MB need (Mail.ReadWrite).
 */

export interface GraphHostCheck {
  smarthost: string;
  token: 'pass' | 'fail';
  mailbox: 'pass' | 'warn' | 'fail' | 'skip';
  verdict: Verdict;
  problems: string[];
}

export async function checkGraphHost(config: GraphSmartHostConfig): Promise<GraphHostCheck> {
  const result = (
    token: GraphHostCheck['token'],
    mailbox: GraphHostCheck['mailbox'],
    problems: string[],
  ): GraphHostCheck => {
    const verdict: Verdict = token === 'fail' || mailbox === 'fail' ? 'fail' : mailbox === 'warn' ? 'warn' : 'pass';
    return { smarthost: config.name, token, mailbox, verdict, problems };
  };
  let http: HttpsClient;
  let tokens: GraphTokens;
  try {
    const ca = loadCa(config);
    http = new HttpsClient({
      ...(ca !== undefined ? { ca } : {}),
      verify: config.tls_verify,
      maxSockets: 1,
      connectTimeoutMs: config.connect_timeout,
      socketTimeoutMs: config.socket_timeout,
    });
    tokens = new GraphTokens(config, http, loadCredential(config));
  } catch (err) {
    return result('fail', 'skip', [`credentials: ${(err as Error).message}`]);
  }
  try {
    try {
      await tokens.get();
    } catch (err) {
      if (err instanceof CredentialsRefused) return result('fail', 'skip', [`token: ${err.message}`]);
      return result('fail', 'skip', [`token: ${config.token_url} cannot be reached: ${(err as Error).message}`]);
    }
    if (config.send_as === 'from' && config.mailbox === undefined) {
      return result('pass', 'skip', [
        "mailbox: send_as: from sends as each message's From address; none to check here",
      ]);
    }
    const mailbox = config.mailbox as string;
    try {
      await new GraphCalls(http, tokens, config.graph_url).call(
        'GET',
        `${userPath(mailbox)}/mailFolders/drafts?$select=id`,
        200,
      );
      return result('pass', 'pass', []);
    } catch (err) {
      if (err instanceof HttpFailure) {
        return result('pass', 'fail', [`mailbox: ${config.graph_url} cannot be reached: ${err.message}`]);
      }
      if (!(err instanceof GraphRefusal)) throw err;
      const { answer } = err;
      const advice = graphAdvice(graphError(answer.body)?.code);
      if (answer.status === 403) {
        return result('pass', 'warn', [
          `mailbox: ${mailbox}: ${describeAnswer(answer)}. The app cannot read this mailbox, ` +
            'so the doctor cannot tell whether it exists; messages over 4 MB (sent as a draft) need ' +
            'Mail.ReadWrite, scoped to this mailbox with RBAC for Applications; ' +
            'smaller ones need Mail.Send for it',
        ]);
      }
      return result('pass', 'fail', [
        `mailbox: ${mailbox}: ${describeAnswer(answer)}${advice ? `; to fix: ${advice}` : ''}`,
      ]);
    }
  } finally {
    http.close();
  }
}
