/** Size and duration units of the config contract: `10MiB`, `512KiB`, plain bytes; `30s`, `5m`, `1h`, `5d`. */

const SIZE_FACTORS: Record<string, number> = {
  b: 1,
  k: 1000,
  kb: 1000,
  m: 1000 ** 2,
  mb: 1000 ** 2,
  g: 1000 ** 3,
  gb: 1000 ** 3,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};

const DURATION_FACTORS_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** Bytes for `10MiB`, `512KiB`, `1.5GB`, `1024`; undefined when it is not a size. */
export function parseSize(input: string | number): number | undefined {
  if (typeof input === 'number') return Number.isInteger(input) && input >= 0 ? input : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(input);
  if (!match) return undefined;
  const factor = match[2] === '' ? 1 : SIZE_FACTORS[match[2].toLowerCase()];
  if (factor === undefined) return undefined;
  return Math.floor(Number(match[1]) * factor);
}

/** Milliseconds for `30s`, `5m`, `1h`, `5d`, `250ms`; a plain number means seconds. */
export function parseDuration(input: string | number): number | undefined {
  if (typeof input === 'number') return input >= 0 ? input * 1000 : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/i.exec(input);
  if (!match) return undefined;
  const factor = DURATION_FACTORS_MS[(match[2] ?? 's').toLowerCase()];
  return Math.round(Number(match[1]) * factor);
}

/** `host:port` or `[v6]:port`, as the listeners and http address are written. */
export function parseHostPort(input: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(input.trim());
  if (!match) return undefined;
  const port = Number(match[3]);
  if (port > 65535) return undefined;
  return { host: match[1] ?? match[2], port };
}
