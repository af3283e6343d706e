import { once } from 'node:events';
import type { Transform } from 'node:stream';
import libmime from 'libmime';
import { Splitter, type MimeNode, type SplitterChunk } from 'mailsplit';
import { fieldValue, type HeaderBlock } from '../message/header-block';
import { blockedExtension } from './rules';
import { UuencodeFinder } from './uuencode-finder';

/**
 * Finds blocked attachment types by walking the MIME tree as the message streams to disk; the
 * body is never held whole. mailsplit splits each level into nodes; message/rfc822 (and
 * message/global) parts are decoded and walked as messages of their own, whatever their
 * disposition or transfer encoding, because a mail app opens an attached message and its
 * attachments just the same. What cannot be inspected with confidence (too deep, too many parts,
 * an ambiguous Content-Type, message/partial fragments) is reported as such: a relay that blocks
 * attachments must not let through the message it could not look into.
 */

export type ScanFinding =
  | { kind: 'blocked'; extension: string }
  | { kind: 'uninspectable'; why: string };

export interface ScanLimits {
  /** message/rfc822 nesting: the top level is 0. */
  maxDepth: number;
  /** MIME parts across all levels. */
  maxParts: number;
}

export const DEFAULT_SCAN_LIMITS: ScanLimits = { maxDepth: 8, maxParts: 2000 };

const EMBEDDED_MESSAGE = new Set(['message/rfc822', 'message/global']);

/** Transfer encodings a text part must be decoded from before its lines can be read. */
const ENCODED = new Set(['base64', 'quoted-printable']);

const LF = 0x0a;
/** Longest partial line held back for line-aligned writes; longer (illegal, > 998 bytes is RFC 5322's limit) lines go through as they are. */
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
   * streams (the common legacy-app message: no MIME parsing). `skip`: the header block still to come.
   */
  private readonly plainText: { finder: UuencodeFinder; skip: number } | null;

  /** `rootHeaders` is the message's header block as the client sent it; the inspector is then fed that block and the body. */
  constructor(rootHeaders: HeaderBlock, blocked: ReadonlySet<string>, limits: ScanLimits = DEFAULT_SCAN_LIMITS) {
    this.state = { blocked, limits, parts: 1, finding: undefined };
    const contentTypes = rootHeaders.all('content-type').map(fieldValue);
    const dispositions = rootHeaders.all('content-disposition').map(fieldValue);
    this.state.finding = inspectNode(this.state, contentTypes, dispositions);
    // RFC 2045: no or an unreadable Content-Type is text/plain.
    const type = contentTypes.length === 1 ? mediaType(contentTypes[0]) : 'text/plain';
    const encodings = rootHeaders.all('content-transfer-encoding').map((field) => fieldValue(field).toLowerCase());
    const encoded = encodings.some((encoding) => ENCODED.has(encoding));
    const structured = type.startsWith('multipart/') || type.startsWith('message/');
    const text = type.startsWith('text/');
    this.walk = this.state.finding === undefined && (structured || (text && encoded)) ? new Walk(this.state, 0) : null;
    this.plainText = this.state.finding === undefined && text && !encoded
      ? { finder: new UuencodeFinder((name) => uuencoded(this.state, name)), skip: rootHeaders.byteLength() + 2 }
      : null;
  }

  write(chunk: Buffer): void | Promise<void> {
    // Once the verdict is in, the rest of the message is not worth parsing.
    if (this.state.finding) return;
    if (this.plainText) return this.readPlainText(chunk);
    if (!this.walk) return;
    if (!this.walk.write(chunk)) return this.walk.drained();
  }

  async end(): Promise<ScanFinding | undefined> {
    if (this.walk) await this.walk.end();
    this.plainText?.finder.end();
    return this.state.finding;
  }

  private readPlainText(chunk: Buffer): void {
    const text = this.plainText as { finder: UuencodeFinder; skip: number };
    if (text.skip >= chunk.length) {
      text.skip -= chunk.length;
      return;
    }
    text.finder.write(text.skip > 0 ? chunk.subarray(text.skip) : chunk);
    text.skip = 0;
  }
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
  private readonly splitter = new Splitter({ ignoreEmbedded: true });
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
    if (this.splitter.destroyed || this.splitter.writableEnded) return true;
    const lastLf = chunk.lastIndexOf(LF);
    if (lastLf === -1 && this.heldBytes + chunk.length <= MAX_HELD_LINE) {
      this.held.push(chunk);
      this.heldBytes += chunk.length;
      return true;
    }
    const cut = lastLf === -1 ? chunk.length : lastLf + 1;
    const lines = this.held.length === 0 ? chunk.subarray(0, cut) : Buffer.concat([...this.held, chunk.subarray(0, cut)]);
    this.held = cut < chunk.length ? [chunk.subarray(cut)] : [];
    this.heldBytes = chunk.length - cut;
    return this.splitter.write(lines);
  }

  drained(): Promise<void> {
    return Promise.race([once(this.splitter, 'drain').then(() => undefined), this.finished]);
  }

  async end(): Promise<void> {
    if (!this.splitter.writableEnded && !this.splitter.destroyed) {
      if (this.heldBytes > 0) this.splitter.write(Buffer.concat(this.held));
      this.held = [];
      this.splitter.end();
    }
    await this.finished;
    this.closeEmbedded();
    await Promise.all(this.children);
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
    // The root of this level was already counted and inspected by whoever started the level.
    if (node.root) {
      if (this.depth > 0) this.state.finding ??= inspectNode(this.state, headerValues(node, 'content-type'), headerValues(node, 'content-disposition'));
      if (!this.state.finding) this.readText(node);
      return;
    }
    this.state.parts++;
    if (this.state.parts > this.state.limits.maxParts) {
      this.state.finding = { kind: 'uninspectable', why: `more than ${this.state.limits.maxParts} MIME parts` };
      return;
    }
    this.state.finding = inspectNode(this.state, headerValues(node, 'content-type'), headerValues(node, 'content-disposition'));
    if (this.state.finding) return;
    this.readText(node);
    const type = node.contentType || 'text/plain';
    if (type === 'message/partial') {
      this.state.finding = { kind: 'uninspectable', why: 'a message/partial fragment' };
    } else if (EMBEDDED_MESSAGE.has(type)) {
      if (this.depth + 1 > this.state.limits.maxDepth) {
        this.state.finding = { kind: 'uninspectable', why: `messages nested more than ${this.state.limits.maxDepth} deep` };
        return;
      }
      this.state.parts++;
      const decoder = node.getDecoder();
      const child = new Walk(this.state, this.depth + 1);
      decoder.on('data', (decoded: Buffer) => child.write(decoded));
      this.children.push(new Promise<void>((resolve) => {
        decoder.once('end', () => child.end().then(resolve, resolve));
        decoder.once('error', () => {
          this.state.finding ??= { kind: 'uninspectable', why: 'an embedded message that cannot be decoded' };
          child.end().then(resolve, resolve);
        });
      }));
      this.embedded = { node, decoder };
    }
  }

  /** A text part (a multipart's, or a single-part message's own body) is read for uuencoded files. */
  private readText(node: MimeNode): void {
    if (node.multipart || !(node.contentType || 'text/plain').startsWith('text/')) return;
    const decoder = node.getDecoder();
    const finder = new UuencodeFinder((name) => uuencoded(this.state, name));
    decoder.on('data', (decoded: Buffer) => finder.write(decoded));
    this.children.push(new Promise<void>((resolve) => {
      decoder.once('end', () => {
        finder.end();
        resolve();
      });
      // An undecodable text part hides no file a mail app could show: nothing more to read.
      decoder.once('error', () => resolve());
    }));
    this.text = { node, decoder };
  }

  private closeEmbedded(): void {
    if (this.embedded) this.embedded.decoder.end();
    this.embedded = null;
    if (this.text) this.text.decoder.end();
    this.text = null;
  }
}

/** What one MIME part's headers say: a blocked file name, or an ambiguity we refuse to guess about. */
function inspectNode(state: ScanState, contentTypes: string[], dispositions: string[]): ScanFinding | undefined {
  // Two Content-Types: mailsplit believes the first, some mail apps the last; an attachment could hide in the gap.
  if (contentTypes.length > 1) return { kind: 'uninspectable', why: 'a MIME part with more than one Content-Type' };
  const names: string[] = [];
  for (const value of contentTypes) addParam(names, value, 'name');
  for (const value of dispositions) addParam(names, value, 'filename');
  const extension = blockedExtension(names, state.blocked);
  return extension === undefined ? undefined : { kind: 'blocked', extension };
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
