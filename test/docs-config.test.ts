import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { configSchema } from '../src/config/schema';

/**
 * docs/configuration.md documents every config key: each key path of the schema has a table row of
 * its own (`| \`spool.retry.initial\` | 30s | … |`), and every table row names a key the schema has.
 * A key added without its row, or a row left behind by a removed key, fails here.
 */

const DOC = path.resolve(__dirname, '..', 'docs', 'configuration.md');

/** Schema kinds that hold no keys below them. */
const LEAF_TYPES = new Set([
  'string',
  'number',
  'boolean',
  'enum',
  'literal',
  'transform',
  'custom',
  'bigint',
  'date',
  'null',
  'undefined',
  'any',
  'unknown',
]);

/**
 * Every key path a config may hold, as the doc writes it: `spool.retry.initial`, `listeners[].tls`
 * (each entry of a list), `policies.<name>.route` (each entry of a map). A kind of schema this walk
 * does not know is an error, so a new construct cannot hide its keys from the check.
 */
function configKeyPaths(schema: z.ZodType, prefix = ''): string[] {
  if (schema instanceof z.ZodObject) {
    return Object.entries(schema.shape as Record<string, z.ZodType>).flatMap(([key, child]) => {
      const keyPath = prefix === '' ? key : `${prefix}.${key}`;
      return [keyPath, ...configKeyPaths(child, keyPath)];
    });
  }
  if (
    schema instanceof z.ZodOptional ||
    schema instanceof z.ZodDefault ||
    schema instanceof z.ZodPrefault ||
    schema instanceof z.ZodNullable ||
    schema instanceof z.ZodNonOptional ||
    schema instanceof z.ZodReadonly ||
    schema instanceof z.ZodCatch ||
    schema instanceof z.ZodLazy
  ) {
    return configKeyPaths(schema.unwrap() as z.ZodType, prefix);
  }
  if (schema instanceof z.ZodPipe) {
    return [...configKeyPaths(schema.in as z.ZodType, prefix), ...configKeyPaths(schema.out as z.ZodType, prefix)];
  }
  if (schema instanceof z.ZodUnion) {
    return (schema.options as readonly z.ZodType[]).flatMap((option) => configKeyPaths(option, prefix));
  }
  if (schema instanceof z.ZodArray) return configKeyPaths(schema.element as z.ZodType, `${prefix}[]`);
  if (schema instanceof z.ZodRecord) return configKeyPaths(schema.valueType as z.ZodType, `${prefix}.<name>`);
  if (LEAF_TYPES.has(schema.type)) return [];
  const where = prefix || '(root)';
  throw new Error(`${where}: the docs check does not know schema type ${schema.type}; teach configKeyPaths about it`);
}

/** The key named in the first column of every table row: `` | `listeners[].tls` | none | … | ``. */
function documentedKeys(markdown: string): string[] {
  const keys: string[] = [];
  for (const line of markdown.split('\n')) {
    const match = /^\|\s*`([^`]+)`\s*\|/.exec(line);
    if (match) keys.push(match[1]);
  }
  return keys;
}

/** A key written as one object (`dkim: {…}`) or a list of them (`dkim: [{…}]`) has one row: `[]` is ignored. */
function comparable(keyPath: string): string {
  return keyPath.replace(/\[\]/g, '');
}

interface KeyComparison {
  undocumented: string[];
  unknown: string[];
}

function compareKeys(schemaPaths: readonly string[], docKeys: readonly string[]): KeyComparison {
  const documented = new Set(docKeys.map(comparable));
  const known = new Set(schemaPaths.map(comparable));
  const undocumented = [...new Set(schemaPaths.map(comparable).filter((keyPath) => !documented.has(keyPath)))];
  const unknown = docKeys.filter((key) => !known.has(comparable(key)));
  return { undocumented, unknown };
}

describe('docs/configuration.md', () => {
  const schemaPaths = configKeyPaths(configSchema);
  const markdown = readFileSync(DOC, 'utf8');

  test('the walk finds the schema keys, nested ones included', () => {
    expect(schemaPaths).toEqual(
      expect.arrayContaining([
        'hostname',
        'tls.cert',
        'listeners[].proxy_protocol',
        'policies.<name>.rate_limits[].bytes',
        'routes.<name>.dkim[].selector',
        'smarthosts[].auth.token_url',
        'smarthosts[].breaker.cooldown',
        'events.webhook.retry.max',
        'limits.auth_failures.lockout',
        'state.redis.url',
      ]),
    );
  });

  test('every key of the schema has a row, and every row is a key of the schema', () => {
    const { undocumented, unknown } = compareKeys(schemaPaths, documentedKeys(markdown));
    // Listed rather than asserted one by one, so a failure names every missing row at once.
    expect({ undocumented, unknown }).toEqual({ undocumented: [], unknown: [] });
  });

  test('a row taken out of a doc is reported missing, a row for a key that is gone is reported unknown', () => {
    const complete = schemaPaths.map((keyPath) => `| \`${keyPath}\` | default | meaning |`).join('\n');
    expect(compareKeys(schemaPaths, documentedKeys(complete))).toEqual({ undocumented: [], unknown: [] });
    const withoutRow = complete
      .split('\n')
      .filter((line) => !line.startsWith('| `spool.retry.factor` |'))
      .join('\n');
    expect(compareKeys(schemaPaths, documentedKeys(withoutRow)).undocumented).toEqual(['spool.retry.factor']);
    const withStaleRow = `${complete}\n| \`spool.retry.jitter\` | 0 | gone |`;
    expect(compareKeys(schemaPaths, documentedKeys(withStaleRow)).unknown).toEqual(['spool.retry.jitter']);
  });

  test('a schema construct the walk does not know fails instead of hiding its keys', () => {
    const withTuple = z.object({ pair: z.tuple([z.object({ hidden: z.string() }), z.string()]) });
    expect(() => configKeyPaths(withTuple)).toThrow(/pair: .*tuple/);
  });
});
