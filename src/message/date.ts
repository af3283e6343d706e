/** RFC 5322 date-time with a numeric zone (`toUTCString` says GMT, which is obsolete syntax there). */
export function rfc5322Date(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}
