/**
 * The part of mailsplit's API that the policy MIME walk and the Graph transport's large-message
 * path use (the package ships no types). Headers are kept as binary (latin1) strings, as mailsplit
 * holds them.
 */
declare module 'mailsplit' {
  import { Transform, type TransformOptions } from 'node:stream';

  export interface SplitterOptions {
    /** Treat message/rfc822 parts as leaves (we walk them ourselves, whatever their disposition or encoding). */
    ignoreEmbedded?: boolean;
    maxHeadSize?: number;
    maxChildNodes?: number;
  }

  export class Headers {
    /** Every full header line (`Key: value`, folded as received) for this key. */
    get(key: string): string[];
    getFirst(key: string): string;
    hasHeader(key: string): boolean;
  }

  export interface MimeNode {
    type: 'node';
    root: boolean;
    /** The multipart (or message) node this one is a part of; false for the root. */
    parentNode: MimeNode | false;
    headers: Headers;
    contentType: string | false;
    multipart: string | false;
    encoding: string | false;
    disposition: string | false;
    filename: string | false;
    /** A stream that turns the node's transfer-encoded body into raw bytes. */
    getDecoder(): Transform;
    /** The node's header block as it came (ending with the blank line), unless it was edited. */
    getHeaders(): Buffer;
  }

  export type SplitterChunk =
    MimeNode | { type: 'data'; node: MimeNode; value: Buffer } | { type: 'body'; node: MimeNode; value: Buffer };

  export class Splitter extends Transform {
    constructor(options?: SplitterOptions & TransformOptions);
  }
}
