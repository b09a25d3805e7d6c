/**
 * Frames: a fixed 10-byte header, then the body.
 *
 *   offset 0  u8   protocol version (1)
 *   offset 1  u8   message type (protocol/messages.ts)
 *   offset 2  u32  request id (0 for unsolicited events)
 *   offset 6  u32  body length in bytes
 *
 * The header is read by hand (binary-parser is several times slower for it, and this runs per frame).
 * Every limit is checked from the header alone, before a single body byte is buffered.
 */
import { BadVersionError, FrameTooLargeError, UnknownMessageError } from './errors.js';
import { Messages, messageByCode, type Body, type MessageName } from './messages.js';

export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 10;
/** Default body limit: a 1 MiB chunk plus its receipt fits many times; a manifest of a 200 GiB file fits. */
export const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024;

export interface Frame {
  readonly type: number;
  readonly name: MessageName;
  readonly requestId: number;
  /** A view; the framer never writes over bytes it has handed out, so it stays valid. */
  readonly body: Buffer;
}

const EMPTY = Buffer.alloc(0);
const MIN_ALLOC = 16 * 1024;

/**
 * Incremental frame reader in the manner of pg-protocol's Parser: loop while a whole header is there,
 * hand out a frame only when all of it has arrived, keep offsets rather than copying. Unlike pg-protocol it
 * never compacts in place: bytes already handed out as bodies are never overwritten, so a consumer may
 * keep a body (a chunk on its way to disk) without copying it.
 */
export class Framer {
  private buf: Buffer = EMPTY;
  private start = 0;
  private end = 0;
  /** Whole size of the frame being received, once its header is known. */
  private frameBytes = 0;

  constructor(private readonly maxBodyBytes = DEFAULT_MAX_BODY_BYTES) {}

  /** Bytes of an unfinished frame held right now (0 between frames). */
  get pendingBytes(): number {
    return this.end - this.start;
  }

  /** Feeds bytes; calls onFrame for each complete frame. Throws a ProtocolError at the first bad header. */
  push(chunk: Buffer, onFrame: (frame: Frame) => void): void {
    this.append(chunk);
    while (this.end - this.start >= HEADER_BYTES) {
      const b = this.buf;
      const o = this.start;
      const version = b[o]!;
      if (version !== PROTOCOL_VERSION) throw new BadVersionError(version);
      const type = b[o + 1]!;
      const name = messageByCode[type];
      if (name === undefined) throw new UnknownMessageError(type);
      const bodyBytes = b.readUInt32BE(o + 6);
      if (bodyBytes > this.maxBodyBytes) throw new FrameTooLargeError(bodyBytes, this.maxBodyBytes);
      const total = HEADER_BYTES + bodyBytes;
      if (this.end - o < total) {
        this.frameBytes = total;
        break;
      }
      this.frameBytes = 0;
      this.start = o + total;
      onFrame({ type, name, requestId: b.readUInt32BE(o + 2), body: b.subarray(o + HEADER_BYTES, o + total) });
    }
    if (this.start === this.end) {
      // Nothing pending: drop the reference so a finished frame's memory can be collected.
      this.buf = EMPTY;
      this.start = this.end = 0;
    }
  }

  private append(chunk: Buffer): void {
    const pending = this.end - this.start;
    if (pending === 0) {
      // Adopt the socket's buffer as is: a frame that arrives in one read is never copied.
      this.buf = chunk;
      this.start = 0;
      this.end = chunk.length;
      return;
    }
    if (this.buf.length - this.end >= chunk.length && this.buf !== chunk) {
      // Space after `end` has never been handed out, so writing there is safe.
      chunk.copy(this.buf, this.end);
      this.end += chunk.length;
      return;
    }
    const need = pending + chunk.length;
    // Grow toward the declared frame size, but never to more than 16 times what has arrived: a header
    // that promises 8 MiB and then stalls costs its sender memory, not us. A frame whose sender has
    // shown it means it (a sixteenth arrived) gets its whole buffer at once: one allocation per chunk.
    const size = need * 16 >= this.frameBytes ? this.frameBytes : Math.max(MIN_ALLOC, 4 * need);
    const next = Buffer.allocUnsafe(Math.max(need, size));
    this.buf.copy(next, 0, this.start, this.end);
    chunk.copy(next, pending);
    this.buf = next;
    this.start = 0;
    this.end = need;
  }
}

function writeHeader(buf: Buffer, type: number, requestId: number, bodyBytes: number): void {
  buf[0] = PROTOCOL_VERSION;
  buf[1] = type;
  buf.writeUInt32BE(requestId >>> 0, 2);
  buf.writeUInt32BE(bodyBytes, 6);
}

/** Encodes a whole frame into one buffer: size first, one allocation, header and body written in place. */
export function encodeFrame<N extends MessageName>(name: N, requestId: number, body: Body<N>): Buffer {
  const { code, codec } = Messages[name];
  const bodyBytes = (codec.size as (v: Body<N>) => number)(body);
  const buf = Buffer.allocUnsafe(HEADER_BYTES + bodyBytes);
  writeHeader(buf, code, requestId, bodyBytes);
  (codec.write as (v: Body<N>, b: Buffer, o: number) => number)(body, buf, HEADER_BYTES);
  return buf;
}

/**
 * Encodes a frame whose last field is `rest` without copying that field: returns the header and every
 * other field, sized for `tailBytes` more bytes that the caller writes straight after it (chunk data).
 */
export function encodeFrameHead<N extends MessageName>(name: N, requestId: number, body: Body<N>, tailBytes: number): Buffer {
  const { code, codec } = Messages[name];
  const headBodyBytes = (codec.size as (v: Body<N>) => number)(body);
  const buf = Buffer.allocUnsafe(HEADER_BYTES + headBodyBytes);
  writeHeader(buf, code, requestId, headBodyBytes + tailBytes);
  (codec.write as (v: Body<N>, b: Buffer, o: number) => number)(body, buf, HEADER_BYTES);
  return buf;
}

/** Decodes a frame's body with its message's codec. Throws MalformedMessageError. */
export function decodeBody<N extends MessageName>(name: N, body: Buffer): Body<N> {
  return Messages[name].codec.decode(body) as Body<N>;
}
