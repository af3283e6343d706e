import libmime from 'libmime';

/**
 * A header value with its RFC 2047 encoded words decoded (libmime; adjacent words joined as RFC 2047
 * says), or the value itself when it has none or they cannot be decoded: rules then judge the text
 * as sent. libmime scans the value once per word, so the time grows with the value's length.
 */
export function decodeWords(value: string): string {
  if (!value.includes('=?')) return value;
  try {
    return libmime.decodeWords(value);
  } catch {
    return value;
  }
}
