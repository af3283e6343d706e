/**
 * A Bloom filter over strings: "certainly not in this block" for a queue id or Message-ID, in about
 * ten bits per key (1% false positives with seven probes). A false positive only costs reading a
 * block that turns out not to hold the key, never a wrong answer.
 */

const BITS_PER_KEY = 10;
const PROBES = 7;
const MIN_BITS = 64;

/** Two independent 32-bit hashes of a key, computed once and probed against many filters. */
export interface KeyHash {
  h1: number;
  h2: number;
}

export function hashKey(key: string): KeyHash {
  // FNV-1a over UTF-16 code units, then two different finalisers (murmur3's fmix32 with two seeds).
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return { h1: fmix32(h ^ 0x9e3779b9), h2: fmix32(h ^ 0x85ebca6b) | 1 };
}

function fmix32(input: number): number {
  let h = input;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class BloomFilter {
  private constructor(
    readonly bits: number,
    /** Bit i is bit (i & 7) of byte (i >>> 3): the same bytes on every machine, written as they are. */
    private readonly bytes: Buffer,
  ) {}

  /** An empty filter sized for `keys` keys. */
  static forKeys(keys: number): BloomFilter {
    const bits = Math.max(MIN_BITS, Math.ceil((keys * BITS_PER_KEY) / 8) * 8);
    return new BloomFilter(bits, Buffer.alloc(bits / 8));
  }

  /** A filter as `toBase64` wrote it; null when the two do not fit together. */
  static fromBase64(bits: number, data: string): BloomFilter | null {
    if (!Number.isInteger(bits) || bits < MIN_BITS || bits % 8 !== 0) return null;
    const bytes = Buffer.from(data, 'base64');
    if (bytes.length !== bits / 8) return null;
    return new BloomFilter(bits, bytes);
  }

  add(hash: KeyHash): void {
    for (let i = 0; i < PROBES; i++) {
      const index = ((hash.h1 + Math.imul(i, hash.h2)) >>> 0) % this.bits;
      this.bytes[index >>> 3] |= 1 << (index & 7);
    }
  }

  mayContain(hash: KeyHash): boolean {
    for (let i = 0; i < PROBES; i++) {
      const index = ((hash.h1 + Math.imul(i, hash.h2)) >>> 0) % this.bits;
      if ((this.bytes[index >>> 3] & (1 << (index & 7))) === 0) return false;
    }
    return true;
  }

  toBase64(): string {
    return this.bytes.toString('base64');
  }
}
