/**
 * A message's header block as an editable list of fields. Fields keep their raw bytes (held as
 * latin1 strings, so 8-bit and UTF-8 headers round-trip unchanged); only the fields a stage edits
 * are rewritten, everything else leaves exactly as it came.
 */

export interface HeaderField {
  /** Lower-cased field name, for lookups. '' for a malformed line without a colon (kept as is). */
  key: string;
  /** The whole field as received, folded lines included, without the final CRLF. */
  raw: string;
}

export class HeaderBlock {
  constructor(public fields: HeaderField[]) {}

  /** Parses header bytes (without the blank line that ends them); CRLF line endings expected. */
  static parse(bytes: Buffer): HeaderBlock {
    const text = bytes.toString('latin1');
    const fields: HeaderField[] = [];
    if (text === '') return new HeaderBlock(fields);
    for (const line of text.split('\r\n')) {
      const last = fields[fields.length - 1];
      if ((line.startsWith(' ') || line.startsWith('\t')) && last) {
        last.raw += `\r\n${line}`;
        continue;
      }
      const colon = line.indexOf(':');
      fields.push({ key: colon > 0 ? line.slice(0, colon).trim().toLowerCase() : '', raw: line });
    }
    return new HeaderBlock(fields);
  }

  /**
   * A copy to edit, sharing the field objects: no method changes a field in place (an edit replaces
   * it), so the copy's edits never show in this block.
   */
  copy(): HeaderBlock {
    return new HeaderBlock([...this.fields]);
  }

  /** Whether this block holds exactly the fields of `other`, in order: a copy of it that nothing edited. */
  sameFieldsAs(other: HeaderBlock): boolean {
    return this.fields.length === other.fields.length && this.fields.every((field, i) => field === other.fields[i]);
  }

  all(name: string): HeaderField[] {
    const key = name.toLowerCase();
    return this.fields.filter((field) => field.key === key);
  }

  has(name: string): boolean {
    return this.first(name) !== undefined;
  }

  /** The unfolded value of the first field with this name, decoded as UTF-8; undefined when absent. */
  value(name: string): string | undefined {
    const field = this.first(name);
    return field === undefined ? undefined : fieldValue(field);
  }

  private first(name: string): HeaderField | undefined {
    const key = name.toLowerCase();
    return this.fields.find((field) => field.key === key);
  }

  /** Removes every field with one of these names; returns how many were removed. */
  remove(...names: string[]): number {
    const keys = new Set(names.map((name) => name.toLowerCase()));
    const before = this.fields.length;
    this.fields = this.fields.filter((field) => !keys.has(field.key));
    return before - this.fields.length;
  }

  /** Adds a field; `value` must already be a valid (folded, encoded) header value without CR/LF injection. */
  add(name: string, value: string, where: 'top' | 'bottom' = 'bottom'): void {
    if (/[\r\n]/.test(value.replace(/\r\n[ \t]/g, '')))
      throw new Error(`refusing to add header ${name} with a line break in its value`);
    const field = { key: name.toLowerCase(), raw: `${name}: ${Buffer.from(value, 'utf8').toString('latin1')}` };
    if (where === 'top') this.fields.unshift(field);
    else this.fields.push(field);
  }

  /** Replaces the value of every field with this name (or adds one when absent). */
  set(name: string, value: string): void {
    const key = name.toLowerCase();
    const index = this.fields.findIndex((field) => field.key === key);
    this.remove(name);
    const encoded = Buffer.from(value, 'utf8').toString('latin1');
    if (index === -1) this.add(name, value);
    else this.fields.splice(index, 0, { key, raw: `${name}: ${encoded}` });
  }

  /** How many bytes toBuffer() gives, without building it. */
  byteLength(): number {
    let bytes = 0;
    for (const field of this.fields) bytes += field.raw.length + 2;
    return bytes;
  }

  /** The block as bytes, each field ending in CRLF (the blank line that ends the header is not included). */
  toBuffer(): Buffer {
    if (this.fields.length === 0) return Buffer.alloc(0);
    return Buffer.from(`${this.fields.map((field) => field.raw).join('\r\n')}\r\n`, 'latin1');
  }
}

/** The unfolded value of one field, decoded as UTF-8 (RFC 6532) and trimmed. */
export function fieldValue(field: HeaderField): string {
  const colon = field.raw.indexOf(':');
  const raw = colon === -1 ? field.raw : field.raw.slice(colon + 1);
  return Buffer.from(raw.replace(/\r\n(?=[ \t])/g, ''), 'latin1')
    .toString('utf8')
    .trim();
}
