/**
 * What an admin has to change when Microsoft refuses a Graph smart host: the token endpoint's
 * AADSTS codes and Graph's error codes, each with the place to fix it. Pure; the doctor, the log
 * line of a refused token and the docs use the same words.
 */

const AADSTS: Readonly<Record<string, string>> = {
  '7000215':
    "client_secret is not a secret of this app: copy the secret's Value (not its Secret ID) " +
    'from Certificates & secrets',
  '7000222': 'the client secret has expired: add a new one under Certificates & secrets and put it in client_secret',
  '7000218': 'the token request carried no credential: set client_secret, or certificate: { cert, key }',
  '700016':
    'no app with this client_id in the tenant: check client_id (Application (client) ID) and tenant, ' +
    'and that an admin consented to the app in this tenant',
  '90002': 'tenant not found: use the Directory (tenant) ID or a verified domain of the tenant',
  '900023': 'tenant is neither a tenant ID nor a domain of one: use the Directory (tenant) ID',
  '90014': 'the token request missed a required field: check client_id and the credential',
  '70011': 'the scope is not valid: leave scope unset (it defaults to <graph_url origin>/.default)',
  '500011':
    'Graph is not known in this tenant for that scope: check graph_url and scope (national clouds have their own)',
  '700027':
    'the certificate that signed the assertion is not registered: upload the certificate (its public part) ' +
    'to the app under Certificates & secrets',
  '700024': "the client assertion is outside its valid time: set this machine's clock right (NTP)",
  '7000112': 'the app is disabled in this tenant: enable it under Enterprise applications > Properties',
  '53003': "Conditional Access blocked the token: allow this workload identity (or this relay's address) in the policy",
};

/** The AADSTS code of a token endpoint's answer: `error_codes[0]`, or the first `AADSTSnnn` of its description. */
export function aadstsCode(answer: { error_codes?: unknown; error_description?: unknown }): string | undefined {
  if (Array.isArray(answer.error_codes) && answer.error_codes.length > 0) return String(answer.error_codes[0]);
  if (typeof answer.error_description === 'string') return /AADSTS(\d+)/.exec(answer.error_description)?.[1];
  return undefined;
}

/** What to fix for an AADSTS code; undefined for a code this table does not know. */
export function aadstsAdvice(code: string | undefined): string | undefined {
  return code === undefined ? undefined : AADSTS[code];
}

const GRAPH: Readonly<Record<string, string>> = {
  ErrorAccessDenied:
    'the app may not send as this mailbox: grant the Mail.Send application permission with admin consent, ' +
    "and include the mailbox in the app's RBAC for Applications scope (or application access policy)",
  ErrorSendAsDenied:
    "the mailbox may not send as the message's From address: use send_as: from, a route rewrite_from " +
    'to the mailbox, or give the mailbox Send As rights',
  ErrorInvalidUser: 'no such mailbox in the tenant: check mailbox (its user principal name or object ID)',
  MailboxNotEnabledForRESTAPI: 'the mailbox is not in Exchange Online (on-premises, or no Exchange licence)',
  ResourceNotFound: 'no such mailbox in the tenant: check mailbox (its user principal name or object ID)',
  InvalidAuthenticationToken: 'Graph refused the token: check scope and graph_url (they must be of the same cloud)',
  Authorization_RequestDenied: 'the app lacks a permission for this request: grant it with admin consent',
};

/** What to fix for a Graph error code; undefined for a code this table does not know. */
export function graphAdvice(code: string | undefined): string | undefined {
  return code === undefined ? undefined : GRAPH[code];
}
