import { RE2JS } from 're2js';

/**
 * Address globs as RE2 expressions. A glob runs against addresses the client chose, on the event
 * loop every session shares, so it is matched by RE2's linear-time engine (the `re2js` package, as
 * header rules are): picomatch, which matched them before, compiles to a backtracking RegExp, and
 * `*a*a*a*@x.example` against a long local part takes polynomial time there. No maintained glob
 * library emits RE2 syntax (picomatch's output leans on lookaheads), so the translation is here; the
 * tests hold it to picomatch's answers for the syntax the README documents:
 *
 *   `*`        any run of characters, `@` and `.` included (an empty one too)
 *   `?`        one character
 *   `[abc]`, `[a-z]`, `[!a]`, `[^a]`, `[[:alpha:]]`   one character of (or not of) a class
 *   `{a,b}`    one of the alternatives, nestable (`{erp,crm}@corp.example`)
 *   `\x`       a literal x
 *
 * Everything else is literal. Parentheses (picomatch's extglobs and groups) and brace ranges
 * (`{1..3}`) are refused at load with a pointer to the supported form.
 */

export type GlobTranslation = { ok: true; source: string } | { ok: false; error: string };

const POSIX_CLASSES = new Set([
  'alnum',
  'alpha',
  'ascii',
  'blank',
  'cntrl',
  'digit',
  'graph',
  'lower',
  'print',
  'punct',
  'space',
  'upper',
  'word',
  'xdigit',
]);
const BRACE_RANGE = /^(?:-?\d+|[a-z])\.\.(?:-?\d+|[a-z])(?:\.\.-?\d+)?$/i;

/** RE2 reads a backslash before any ASCII punctuation as that character, and nothing else needs escaping. */
function literal(char: string): string {
  return /[!-/:-@[-`{-~]/.test(char) ? `\\${char}` : char;
}

/** The RE2 source for a whole glob (to be matched against the whole subject), or why it cannot be one. */
export function globToRe2(glob: string): GlobTranslation {
  if (/[()]/.test(glob))
    return { ok: false, error: 'parentheses are not part of an address glob (write alternatives as {a,b})' };
  const braces = matchingBraces(glob);
  let error: string | undefined;
  const translate = (from: number, to: number): string => {
    let out = '';
    for (let i = from; i < to && error === undefined; i++) {
      const char = glob[i];
      if (char === '\\' && i + 1 < to) {
        out += literal(glob[++i]);
      } else if (char === '*') {
        out += '.*';
        while (glob[i + 1] === '*') i++;
      } else if (char === '?') {
        out += '.';
      } else if (char === '[') {
        const end = classEnd(glob, i, to);
        if (end === -1) out += literal(char);
        else {
          const translated = translateClass(glob.slice(i + 1, end));
          if (!translated.ok) error = translated.error;
          else out += translated.source;
          i = end;
        }
      } else if (char === '{' && braces.has(i) && (braces.get(i) as number) < to) {
        const close = braces.get(i) as number;
        const inner = glob.slice(i + 1, close);
        if (BRACE_RANGE.test(inner))
          error = `brace ranges like {${inner}} are not supported; list the alternatives ({a,b,c})`;
        const commas = topLevelCommas(glob, i + 1, close, braces);
        if (commas.length === 0) {
          out += literal(char);
          continue;
        }
        const bounds = [i, ...commas, close];
        const alternatives = bounds.slice(1).map((end, k) => translate(bounds[k] + 1, end));
        out += `(?:${alternatives.join('|')})`;
        i = close;
      } else {
        out += literal(char);
      }
    }
    return out;
  };
  const source = translate(0, glob.length);
  if (error !== undefined) return { ok: false, error };
  try {
    RE2JS.compile(source);
  } catch (err) {
    return { ok: false, error: `cannot be read as a glob: ${(err as Error).message}` };
  }
  return { ok: true, source };
}

/** `{` index → its `}` index, for braces outside classes and escapes; unbalanced ones are literal. */
function matchingBraces(glob: string): Map<number, number> {
  const pairs = new Map<number, number>();
  const open: number[] = [];
  for (let i = 0; i < glob.length; i++) {
    const char = glob[i];
    if (char === '\\') i++;
    else if (char === '[') {
      const end = classEnd(glob, i, glob.length);
      if (end !== -1) i = end;
    } else if (char === '{') open.push(i);
    else if (char === '}' && open.length > 0) pairs.set(open.pop() as number, i);
  }
  return pairs;
}

function topLevelCommas(glob: string, from: number, to: number, braces: Map<number, number>): number[] {
  const commas: number[] = [];
  for (let i = from; i < to; i++) {
    const char = glob[i];
    if (char === '\\') i++;
    else if (char === '[') {
      const end = classEnd(glob, i, to);
      if (end !== -1) i = end;
    } else if (char === '{' && braces.has(i)) i = braces.get(i) as number;
    else if (char === ',') commas.push(i);
  }
  return commas;
}

/**
 * Index of the `]` closing the class opened at `open`, or -1 (then the `[` is literal). A `]` first in the class is
 * literal.
 */
function classEnd(glob: string, open: number, limit: number): number {
  let i = open + 1;
  if (glob[i] === '!' || glob[i] === '^') i++;
  if (glob[i] === ']') i++;
  for (; i < limit; i++) {
    if (glob[i] === '\\') i++;
    else if (glob[i] === '[' && glob[i + 1] === ':') {
      const close = glob.indexOf(':]', i + 2);
      if (close !== -1 && close < limit) i = close + 1;
    } else if (glob[i] === ']') return i;
  }
  return -1;
}

function translateClass(body: string): GlobTranslation {
  let out = '[';
  let i = 0;
  if (body[0] === '!' || body[0] === '^') {
    out += '^';
    i = 1;
  }
  const escapeInClass = (char: string) => (/[\\\]^[-]/.test(char) ? `\\${char}` : char);
  for (let first = true; i < body.length; i++, first = false) {
    const char = body[i];
    if (char === '[' && body[i + 1] === ':') {
      const close = body.indexOf(':]', i + 2);
      const name = close === -1 ? '' : body.slice(i + 2, close);
      if (!POSIX_CLASSES.has(name)) return { ok: false, error: `unknown character class [:${name}:]` };
      out += `[:${name}:]`;
      i = close + 1;
    } else if (char === '\\' && i + 1 < body.length) {
      out += escapeInClass(body[++i]);
    } else if (char === '-' && !first && i + 1 < body.length) {
      out += '-';
    } else {
      out += escapeInClass(char);
    }
  }
  return { ok: true, source: `${out}]` };
}
