import { once } from 'node:events';
import type { Transform } from 'node:stream';
import libmime from 'libmime';
import { Splitter, type MimeNode, type SplitterChunk } from 'mailsplit';
import { fieldValue, type HeaderBlock } from '../message/header-block';
import { blockedExtension } from './rules';
import { SplitterInputCheck } from './splitter-input-check';
import { transferMechanism } from './transfer-encoding';
import { UuencodeFinder } from './uuencode-finder';

/**
 * Finds blocked attachment types by walking the MIME tree as the message streams to disk; the
 * body is never held whole. mailsplit splits each level into nodes; message/rfc822 (and
 * message/global) parts are decoded and walked as messages of their own, whatever their
 * disposition or transfer encoding, because a mail app opens an attached message and its
 * attachments just the same; so is a message that is itself message/rfc822, and a part of a
 * multipart/digest without a Content-Type (RFC 2046 5.1.5 makes it message/rfc822). Transfer
 * encodings are read by their first token, as mail apps read them. What cannot be inspected with
 * confidence (too deep, too many parts, an ambiguous Content-Type or Content-Transfer-Encoding, a
 * multipart without a boundary, message/partial fragments, input mailsplit would take quadratic
 * time over) is reported as such: a relay that blocks attachments must not let through the message
 * it could not look into.
 */

export type ScanFinding = { kind: 'blocked'; extension: string } | { kind: 'uninspectable'; why: string };

export interface ScanLimits {
  /** message/rfc822 nesting: the top level is 0. */
  maxDepth: number;
  /** MIME parts across all levels. */
  maxParts: number;
}

export const DEFAULT_SCAN_LIMITS: ScanLimits = { maxDepth: 8, maxParts: 2000 };

const EMBEDDED_MESSAGE = new Set(['message/rfc822', 'message/global']);

/**
 * Largest header block of a MIME part or an attached message the walk lets mailsplit parse. Its
 * header parser takes time that grows faster than the block (1 MiB of folded fields: 22 s); real
 * header blocks are a few KiB, and at this size one costs tens of milliseconds.
 */
const MAX_PART_HEADER_BYTES = 64 * 1024;

/** Transfer encodings a text part must be decoded from before its lines can be read. */
const ENCODED = new Set(['base64', 'quoted-printable']);

const LF = 0x0a;
/**
 * Longest partial line held back for line-aligned writes; longer (illegal, > 998 bytes is RFC 5322's limit) lines go
 * through as they are.
 */
const MAX_HELD_LINE = 1024 * 1024;

/** Shared by every level of one message's walk. */
interface ScanState {
  readonly blocked: ReadonlySet<string>;
  readonly limits: ScanLimits;
  parts: number;
  finding: ScanFinding | undefined;
}

export class AttachmentScanner {
  private readonly state: ScanState;
  /** The MIME walk, for a multipart or message/* body and for an encoded text body; else null. */
  private readonly walk: Walk | null;
  /**
   * A single-part text body that is not encoded is read line by line for uuencoded files as it
   * streams (the common legacy-app message: no MIME parsing).
   */
  private readonly plainText: UuencodeFinder | null;

  /** The message's own header block (and its blank line) still to come in `write`: it was read from `rootHeaders`. */
  private headerBytesLeft: number;

  /**
   * `rootHeaders` is the message's header block as the client sent it; the inspector is then fed that block and the
   * body.
   */
  constructor(rootHeaders: HeaderBlock, blocked: ReadonlySet<string>, limits: ScanLimits = DEFAULT_SCAN_LIMITS) {
    this.state = { blocked, limits, parts: 1, finding: undefined };
    const fields = (name: string) => rootHeaders.all(name).map(fieldValue);
    const part: PartHeaders = {
      contentTypes: fields('content-type'),
      dispositions: fields('content-disposition'),
      encodings: fields('content-transfer-encoding'),
    };
    this.state.finding = inspectNode(this.state, part);
    // RFC 2045: no or an unreadable Content-Type is text/plain.
    const type = part.contentTypes.length === 1 ? mediaType(part.contentTypes[0]) : 'text/plain';
    const encoded = part.encodings.length === 1 && ENCODED.has(transferMechanism(part.encodings[0]));
    const structured = type.startsWith('multipart/') || type.startsWith('message/');
    const text = type.startsWith('text/');
    this.headerBytesLeft = rootHeaders.byteLength() + 2;
    this.walk = this.state.finding === undefined && (structured || (text && encoded)) ? new Walk(this.state, 0) : null;
    this.walk?.write(walkHeader(rootHeaders));
    this.plainText =
      this.state.finding === undefined && text && !encoded
        ? new UuencodeFinder((name) => uuencoded(this.state, name))
        : null;
  }

  write(chunk: Buffer): void | Promise<void> {
    // Once the verdict is in, the rest of the message is not worth parsing.
    if (this.state.finding) return;
    const body = this.skipHeader(chunk);
    if (body.length === 0) return;
    if (this.plainText) return this.plainText.write(body);
    if (!this.walk) return;
    if (!this.walk.write(body)) return this.walk.drained();
  }

  async end(): Promise<ScanFinding | undefined> {
    if (this.walk) await this.walk.end();
    this.plainText?.end();
    return this.state.finding;
  }

  /** What of `chunk` comes after the message's own header block. */
  private skipHeader(chunk: Buffer): Buffer {
    if (this.headerBytesLeft === 0) return chunk;
    const skipped = Math.min(this.headerBytesLeft, chunk.length);
    this.headerBytesLeft -= skipped;
    return chunk.subarray(skipped);
  }
}

/**
 * The message's header block as the top level's walk is given it: only the fields the walk reads
 * (Content-Type, Content-Disposition, Content-Transfer-Encoding). The block has been parsed and
 * bounded already (message/header-limits.ts); mailsplit's own parse of a large one is slow (see
 * MAX_PART_HEADER_BYTES), and the other fields mean nothing to the walk.
 */
function walkHeader(rootHeaders: HeaderBlock): Buffer {
  const wanted = new Set(['content-type', 'content-disposition', 'content-transfer-encoding']);
  const lines = rootHeaders.fields.filter((field) => wanted.has(field.key)).map((field) => `${field.raw}\r\n`);
  return Buffer.from(`${lines.join('')}\r\n`, 'latin1');
}

/** A uuencoded file in a text part: judged by its name like any attachment. */
function uuencoded(state: ScanState, name: string): void {
  const extension = blockedExtension([name], state.blocked);
  if (extension !== undefined) state.finding ??= { kind: 'blocked', extension };
}

/**
 * One message level: a mailsplit Splitter, and a child Walk for each embedded message in it.
 *
 * Writes to the Splitter are cut at line ends. mailsplit 5.4.6 loses bytes of a body line that
 * straddles two writes at some offsets (seen as `\nSubje` vanishing from `…\r\nSubject:`); inside
 * an embedded message those bytes are MIME headers, so an attachment name could vanish with them
 * depending on how TCP happened to cut the stream. Whole lines per write never hit that path.
 */
class Walk {
  private readonly splitter = new Splitter({ ignoreEmbedded: true, maxHeadSize: MAX_PART_HEADER_BYTES });
  private readonly input = new SplitterInputCheck();
  private held: Buffer[] = [];
  private heldBytes = 0;
  private readonly finished: Promise<void>;
  private readonly children: Promise<void>[] = [];
  private embedded: { node: MimeNode; decoder: Transform } | null = null;
  /** The text part being read for uuencoded files, decoded from its transfer encoding. */
  private text: { node: MimeNode; decoder: Transform } | null = null;

  constructor(
    private readonly state: ScanState,
    private readonly depth: number,
  ) {
    this.splitter.on('data', (chunk: SplitterChunk) => this.onChunk(chunk));
    this.finished = new Promise((resolve) => {
      this.splitter.once('end', resolve);
      this.splitter.once('error', (err: Error) => {
        // mailsplit refuses absurd structures itself (EMAXLEN: child nodes, header size).
        this.state.finding ??= { kind: 'uninspectable', why: err.message };
        resolve();
      });
    });
  }

  write(chunk: Buffer): boolean {
    if (this.state.finding || this.splitter.destroyed || this.splitter.writableEnded) return true;
    const lastLf = chunk.lastIndexOf(LF);
    if (lastLf === -1 && this.heldBytes + chunk.length <= MAX_HELD_LINE) {
      this.held.push(chunk);
      this.heldBytes += chunk.length;
      return true;
    }
    const cut = lastLf === -1 ? chunk.length : lastLf + 1;
    const lines =
      this.held.length === 0 ? chunk.subarray(0, cut) : Buffer.concat([...this.held, chunk.subarray(0, cut)]);
    this.held = cut < chunk.length ? [chunk.subarray(cut)] : [];
    this.heldBytes = chunk.length - cut;
    return this.feed(lines);
  }

  drained(): Promise<void> {
    return Promise.race([once(this.splitter, 'drain').then(() => undefined), this.finished]);
  }

  async end(): Promise<void> {
    if (!this.splitter.writableEnded && !this.splitter.destroyed) {
      if (this.heldBytes > 0) this.feed(Buffer.concat(this.held));
      this.held = [];
      const why = this.input.finish();
      if (why !== undefined) this.state.finding ??= { kind: 'uninspectable', why };
      this.splitter.end();
    }
    await this.finished;
    this.closeEmbedded();
    await Promise.all(this.children);
  }

  /** Hands mailsplit the next lines, unless they hold what it would take quadratic time over (then nothing more). */
  private feed(lines: Buffer): boolean {
    if (this.state.finding) return true;
    const why = this.input.check(lines);
    if (why !== undefined) {
      this.state.finding = { kind: 'uninspectable', why };
      return true;
    }
    return this.splitter.write(lines);
  }

  private onChunk(chunk: SplitterChunk): void {
    if (this.state.finding) return;
    if (chunk.type === 'node') {
      this.closeEmbedded();
      this.onNode(chunk);
    } else if (chunk.type === 'body' && this.embedded && chunk.node === this.embedded.node) {
      this.embedded.decoder.write(chunk.value);
    } else if (chunk.type === 'body' && this.text && chunk.node === this.text.node) {
      this.text.decoder.write(chunk.value);
    }
  }

  private onNode(node: MimeNode): void {
    if (!node.root) {
      this.state.parts++;
      if (this.state.parts > this.state.limits.maxParts) {
        this.state.finding = { kind: 'uninspectable', why: `more than ${this.state.limits.maxParts} MIME parts` };
        return;
      }
    }
    // The message's own header block was inspected by the scanner before the walk began.
    if (!node.root || this.depth > 0) this.state.finding ??= inspectNode(this.state, partHeaders(node));
    if (this.state.finding) return;
    const type = effectiveType(node);
    if (type === 'message/partial') {
      this.state.finding = { kind: 'uninspectable', why: 'a message/partial fragment' };
    } else if (EMBEDDED_MESSAGE.has(type)) {
      this.openEmbedded(node);
    } else if (!node.multipart && type.startsWith('text/')) {
      this.readText(node);
    }
  }

  /** An attached message (or a message that is one as a whole) is walked as a message of its own. */
  private openEmbedded(node: MimeNode): void {
    if (this.depth + 1 > this.state.limits.maxDepth) {
      const why = `messages nested more than ${this.state.limits.maxDepth} deep`;
      this.state.finding = { kind: 'uninspectable', why };
      return;
    }
    this.state.parts++;
    const decoder = decoderFor(node);
    const child = new Walk(this.state, this.depth + 1);
    decoder.on('data', (decoded: Buffer) => child.write(decoded));
    this.children.push(
      new Promise<void>((resolve) => {
        decoder.once('end', () => child.end().then(resolve, resolve));
        decoder.once('error', () => {
          this.state.finding ??= { kind: 'uninspectable', why: 'an embedded message that cannot be decoded' };
          child.end().then(resolve, resolve);
        });
      }),
    );
    this.embedded = { node, decoder };
  }

  /** A text part (a multipart's, or a single-part message's own body) is read for uuencoded files. */
  private readText(node: MimeNode): void {
    const decoder = decoderFor(node);
    const finder = new UuencodeFinder((name) => uuencoded(this.state, name));
    decoder.on('data', (decoded: Buffer) => finder.write(decoded));
    this.children.push(
      new Promise<void>((resolve) => {
        decoder.once('end', () => {
          finder.end();
          resolve();
        });
        // An undecodable text part hides no file a mail app could show: nothing more to read.
        decoder.once('error', () => resolve());
      }),
    );
    this.text = { node, decoder };
  }

  private closeEmbedded(): void {
    if (this.embedded) this.embedded.decoder.end();
    this.embedded = null;
    if (this.text) this.text.decoder.end();
    this.text = null;
  }
}

/** The header fields of one part that the walk reads, each value unfolded. */
interface PartHeaders {
  contentTypes: string[];
  dispositions: string[];
  encodings: string[];
}

function partHeaders(node: MimeNode): PartHeaders {
  return {
    contentTypes: headerValues(node, 'content-type'),
    dispositions: headerValues(node, 'content-disposition'),
    encodings: headerValues(node, 'content-transfer-encoding'),
  };
}

/**
 * The media type a mail app gives the part: a part of a multipart/digest without Content-Type is
 * message/rfc822 (RFC 2046 5.1.5); otherwise mailsplit's reading (text/plain without a Content-Type,
 * unless a file name says otherwise).
 */
function effectiveType(node: MimeNode): string {
  const parent = node.parentNode;
  if (parent && parent.multipart === 'digest' && !node.headers.hasHeader('content-type')) return 'message/rfc822';
  return node.contentType || 'text/plain';
}

/** The part's body decoder, by the first token of its Content-Transfer-Encoding (see transferMechanism). */
function decoderFor(node: MimeNode): Transform {
  // mailsplit decodes by `node.encoding`, its own reading of the field; ours replaces it first.
  node.encoding = transferMechanism(headerValues(node, 'content-transfer-encoding')[0] ?? '');
  return node.getDecoder();
}

/** What one MIME part's headers say: a blocked file name, or an ambiguity we refuse to guess about. */
function inspectNode(state: ScanState, part: PartHeaders): ScanFinding | undefined {
  // Two Content-Types: mailsplit believes the first, some mail apps the last; an attachment could hide in the gap.
  if (part.contentTypes.length > 1) {
    return { kind: 'uninspectable', why: 'a MIME part with more than one Content-Type' };
  }
  // The same for two transfer encodings: the walk would decode by one, a mail app perhaps by the other.
  if (part.encodings.length > 1) {
    return { kind: 'uninspectable', why: 'a MIME part with more than one Content-Transfer-Encoding' };
  }
  // A multipart without a boundary has no parts anybody can find; what a mail app shows of it is a guess.
  if (part.contentTypes.length === 1 && withoutBoundary(part.contentTypes[0])) {
    return { kind: 'uninspectable', why: 'a multipart without a boundary' };
  }
  const names: string[] = [];
  for (const value of part.contentTypes) addParam(names, value, 'name');
  for (const value of part.dispositions) addParam(names, value, 'filename');
  const extension = blockedExtension(names, state.blocked);
  return extension === undefined ? undefined : { kind: 'blocked', extension };
}

function withoutBoundary(contentType: string): boolean {
  const parsed = libmime.parseHeaderValue(contentType);
  const type = (parsed.value || '').trim().toLowerCase();
  const boundary = parsed.params.boundary;
  return type.startsWith('multipart/') && (typeof boundary !== 'string' || boundary === '');
}

function addParam(names: string[], value: string, param: string): void {
  // libmime assembles RFC 2231 continuations and charsets (name*0*=utf-8''…; name*1=…).
  const parsed = libmime.parseHeaderValue(value);
  const found = parsed.params[param];
  if (typeof found === 'string' && found !== '') names.push(found);
}

function mediaType(value: string): string {
  return (libmime.parseHeaderValue(value).value || '').trim().toLowerCase() || 'text/plain';
}

/** A node's header values, unfolded; mailsplit keeps lines as binary strings, read here as UTF-8 (RFC 6532). */
function headerValues(node: MimeNode, key: string): string[] {
  return node.headers.get(key).map((line) => {
    const value = libmime.decodeHeader(line).value;
    return Buffer.from(String(value ?? ''), 'latin1').toString('utf8');
  });
}
