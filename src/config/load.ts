import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseDocument, type YAMLError } from 'yaml';
import { interpolateEnv, type InterpolationError } from './interpolate';
import { isInlinePem } from './pem';
import { configSchema, type RelayConfig } from './schema';

export type ConfigResult = { ok: true; config: RelayConfig } | { ok: false; errors: string[] };

/** `clients[1].password_hash`: the bracket form admins see in every config error. */
export function formatPath(segments: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of segments) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? String(segment) : `.${String(segment)}`;
  }
  return out === '' ? '(root)' : out;
}

/** Validates an already-parsed config object; relative paths are resolved against `baseDir`. */
export function parseConfig(raw: unknown, baseDir: string, env: NodeJS.ProcessEnv = process.env): ConfigResult {
  const envErrors: InterpolationError[] = [];
  const interpolated = interpolateEnv(raw, env, envErrors);
  const parsed = configSchema.safeParse(interpolated);
  const errors = envErrors.map((e) => `${formatPath(e.path)}: ${e.message}`);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) errors.push(`${formatPath(issue.path)}: ${issue.message}`);
  }
  if (errors.length > 0 || !parsed.success) return { ok: false, errors: [...new Set(errors)] };
  return { ok: true, config: resolvePaths(parsed.data, baseDir) };
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): ConfigResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return { ok: false, errors: [`${file}: ${(err as Error).message}`] };
  }
  const document = parseDocument(text, { prettyErrors: true });
  if (document.errors.length > 0) return { ok: false, errors: yamlErrors(file, text, document.errors) };
  return parseConfig(document.toJS(), path.dirname(path.resolve(file)), env);
}

/** After the first YAML error the parser has lost its place: the rest mostly repeat it. */
const MORE_YAML_ERRORS = 2;

/**
 * The first syntax error with its line, column and the line itself, a hint where one is known,
 * then at most two more errors on a line each and how many were left out.
 */
export function yamlErrors(file: string, text: string, errors: readonly YAMLError[]): string[] {
  const where = (error: YAMLError) =>
    error.linePos ? `${file}:${error.linePos[0].line}:${error.linePos[0].col}` : file;
  const what = (error: YAMLError) => (error.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
  const [first, ...rest] = errors;
  const line = first.linePos ? (text.split(/\r?\n/)[first.linePos[0].line - 1] ?? '') : '';
  const caret = first.linePos ? `${' '.repeat(Math.max(0, first.linePos[0].col - 1))}^` : '';
  let report = `${where(first)}: ${what(first)}${line !== '' ? `\n      ${line}\n      ${caret}` : ''}`;
  // `dir: ${X}/spool` is fine on its own line, but inside { … } or [ … ] the braces end the value.
  if (/\$\{/.test(line) && /[{[]/.test(line.replace(/\$\{[^}]*\}/g, ''))) {
    report += '\n    hint: inside { … } or [ … ], quote a value that holds ${…}: dir: "${X}/spool"';
  }
  const shown = rest.slice(0, MORE_YAML_ERRORS).map((error) => `${where(error)}: ${what(error)}`);
  const hidden = rest.length - shown.length;
  const more = hidden > 0 ? [`… and ${hidden} more YAML error(s), most of them following from the first`] : [];
  return [report, ...shown, ...more];
}

function resolvePaths(config: RelayConfig, baseDir: string): RelayConfig {
  const resolve = (p: string) => path.resolve(baseDir, p);
  return {
    ...config,
    spool: { ...config.spool, dir: resolve(config.spool.dir) },
    tls: config.tls && { ...config.tls, cert: resolve(config.tls.cert), key: resolve(config.tls.key) },
    events: config.events && {
      ...config.events,
      file: config.events.file === undefined ? undefined : resolve(config.events.file),
    },
    routes: Object.fromEntries(
      Object.entries(config.routes).map(([name, route]) => [
        name,
        {
          ...route,
          // A PEM given inline (say from ${DKIM_KEY}) is a key, not a path.
          dkim: route.dkim.map((signature) => ({
            ...signature,
            private_key: isInlinePem(signature.private_key) ? signature.private_key : resolve(signature.private_key),
          })),
        },
      ]),
    ),
    smarthosts: config.smarthosts.map((host) => {
      const withCa = host.ca === undefined ? host : { ...host, ca: resolve(host.ca) };
      if (withCa.type !== 'graph' || withCa.certificate === undefined) return withCa;
      const { cert, key } = withCa.certificate;
      // A PEM given inline (say from ${M365_KEY}) is the certificate or key itself, not a path.
      const file = (value: string) => (isInlinePem(value) ? value : resolve(value));
      return { ...withCa, certificate: { cert: file(cert), key: file(key) } };
    }),
    policies: Object.fromEntries(
      Object.entries(config.policies).map(([name, policy]) => [
        name,
        policy.suppressed_recipients === undefined
          ? policy
          : { ...policy, suppressed_recipients: resolve(policy.suppressed_recipients) },
      ]),
    ),
  };
}
