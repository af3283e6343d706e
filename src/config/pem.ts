/** True when a config value is a PEM itself (say from `${DKIM_KEY}`), not the path of a file holding one. */
export function isInlinePem(value: string): boolean {
  return value.trimStart().startsWith('-----BEGIN');
}
