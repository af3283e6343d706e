import { RE2JS } from 're2js';

/**
 * A header rule's `match`, compiled for RE2's linear-time matcher instead of JavaScript's
 * backtracking one. Header rules run on text the client controls, on the event loop every session
 * shares: with backtracking, one crafted Subject against a pattern like `^(a+)+$` or `^(\w|\d)+$`
 * stalls the relay for seconds to hours, and no static check catches every such pattern (safe-regex2
 * misses the second; redos-detector also refuses ordinary rules like `urgent.*wire transfer`).
 * RE2 reads the same syntax minus lookaround and backreferences, which are refused at load, and its
 * time grows with the header's length only (30,000 spaces against `\s*x\s*y`: 20 ms, where
 * backtracking takes seconds). A test costs ~0.6 us against ~0.06 us for a RegExp (its DFA, once
 * warm), for the few rules a policy has.
 */
export interface HeaderPattern {
  /** The pattern as configured. */
  readonly source: string;
  /** True when the pattern occurs anywhere in `value`, ignoring case (as Postfix header_checks do). */
  test(value: string): boolean;
}

export type CompiledHeaderPattern = { ok: true; pattern: HeaderPattern } | { ok: false; error: string };

export function compileHeaderPattern(source: string): CompiledHeaderPattern {
  let compiled: RE2JS;
  try {
    compiled = RE2JS.compile(source, RE2JS.CASE_INSENSITIVE);
  } catch (err) {
    return {
      ok: false,
      error:
        `invalid regular expression: ${(err as Error).message} ` +
        '(header rules use RE2 syntax: no lookaround, no backreferences)',
    };
  }
  return { ok: true, pattern: { source, test: (value) => compiled.test(value) } };
}

/** What the config schema reports for a header rule's `match`: why it cannot be compiled, or undefined. */
export function headerPatternError(source: string): string | undefined {
  const compiled = compileHeaderPattern(source);
  return compiled.ok ? undefined : compiled.error;
}
