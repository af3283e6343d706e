/**
 * `${NAME}` and `${NAME:-default}` from the environment, applied to every string value after YAML
 * parsing (so a secret containing `#` or `:` cannot change the document's structure).
 */

const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;
const WHOLE_REFERENCE = /^\$\{[^}]+\}$/;

export interface InterpolationError {
  path: (string | number)[];
  message: string;
}

export function interpolateEnv(
  value: unknown,
  env: NodeJS.ProcessEnv,
  errors: InterpolationError[],
  path: (string | number)[] = [],
): unknown {
  if (typeof value === 'string') return interpolateString(value, env, errors, path);
  if (Array.isArray(value)) return value.map((item, i) => interpolateEnv(item, env, errors, [...path, i]));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = interpolateEnv(item, env, errors, [...path, key]);
    return out;
  }
  return value;
}

function interpolateString(
  value: string,
  env: NodeJS.ProcessEnv,
  errors: InterpolationError[],
  path: (string | number)[],
): unknown {
  if (!value.includes('${')) return value;
  const result = value.replace(REFERENCE, (_match, name: string, fallback: string | undefined) => {
    const fromEnv = env[name];
    if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
    if (fallback !== undefined) return fallback;
    errors.push({
      path,
      message: `environment variable ${name} is not set (write \${${name}:-default} for a default)`,
    });
    return '';
  });
  // A scalar that is only a reference takes the type YAML would have given the value (`port: ${PORT:-2525}`).
  if (WHOLE_REFERENCE.test(value)) {
    if (/^\d+$/.test(result)) return Number(result);
    if (result === 'true' || result === 'false') return result === 'true';
  }
  return result;
}
