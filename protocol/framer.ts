/**
 * Frames: a fixed 10-byte header, then the body.
 *
 *   offset 0  u8   protocol version (1)
 *   offset 1  u8   message type (protocol/messages.ts)
 *   offset 2  u32  request id (0 for unsolicited events)
 *   offset 6  u32  body length in bytes
 *
 * The header is read by hand (binary-parser is several times slower for it, and this runs per frame).
 * Every limit is checked from the header alone, before a single body byte is buffered; a list the
 * catalogue caps is checked as soon as its count has arrived, before the rest of the body is buffered.
 */
import { BadVersionError, FrameTooLargeError, UnknownMessageError, VersionError } from './errors.js';
import { Messages, messageByCode, type Body, type MessageName } from './messages.js';

/**
 * The protocol versions this release speaks, oldest to newest (protocol/README.md, "Versions"). The first
 * byte of every frame is its version; a connection speaks the newest version both sides know. A release
 * keeps the previous release's newest version, so a fleet can be upgraded one daemon at a time.
 */
export const PROTOCOL_VERSIONS = { min: 1, max: 1 } as const;
/** The version this release writes (its newest). */
export const PROTOCOL_VERSION = PROTOCOL_VERSIONS.max;
/** A first byte up to this is taken for a p2pshare frame of another version; above, for garbage. */
const PLAUSIBLE_VERSION_MAX = 31;
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
/** Socket reads land here between frames and for small frames (user-buffer mode, see `readBuffer`). */
export const SCRATCH_BYTES = 64 * 1024;
/** Frames at least this long are offered to the sink, so their bodies can be read straight into place. */
const SINK_MIN_BODY_BYTES = 16 * 1024;

/** The header of a frame whose body is on its way: what a sink decides on. */
export interface FrameHeader {
  readonly type: number;
  readonly name: MessageName;
  readonly requestId: number;
  readonly bodyBytes: number;
}

/**
 * Chooses where a large frame's body goes: a buffer of at least `bodyBytes` (the body then arrives in it
 * and the frame's `body` is a view of it), or undefined to let the framer buffer it as usual.
 */
export type BodySink = (header: FrameHeader) => Buffer | undefined;

interface DirectBody {
  header: FrameHeader;
  /** Where the body goes; undefined once the sink was withdrawn (the rest is read and dropped). */
  target: Buffer | undefined;
  filled: number;
}

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
  /** User-buffer mode: the buffer socket reads go to while no body is read in place. */
  private scratch: Buffer | undefined;
  /** A body being read straight into its sink's buffer. */
  private direct: DirectBody | undefined;
  /** The frame being received has passed its early check (its capped lists' counts, see Codec.checkPrefix). */
  private prefixChecked = false;

  constructor(
    private readonly maxBodyBytes = DEFAULT_MAX_BODY_BYTES,
    private readonly sink?: BodySink,
    scratch?: Buffer,
  ) {
    this.scratch = scratch;
  }

  /** Bytes of an unfinished frame held right now (0 between frames). */
  get pendingBytes(): number {
    return this.direct ? HEADER_BYTES + this.direct.filled : this.end - this.start;
  }

  /**
   * User-buffer mode (a socket created with `onread`): where the next read should put its bytes. While a
   * body is read in place this is exactly the rest of that body, so a read never crosses into the next
   * frame and the body is never copied; otherwise it is a scratch buffer reused for every read. Call
   * `commitRead` with the number of bytes read into it.
   */
  readBuffer(): Buffer {
    const d = this.direct;
    if (d) {
      if (d.target) return d.target.subarray(d.filled, d.header.bodyBytes);
      return this.scratchBuffer().subarray(0, Math.min(SCRATCH_BYTES, d.header.bodyBytes - d.filled));
    }
    return this.scratchBuffer();
  }

  /** User-buffer mode: `n` bytes were read into the buffer `readBuffer` returned. */
  commitRead(n: number, onFrame: (frame: Frame) => void): void {
    const d = this.direct;
    if (!d) {
      // The scratch buffer is reused by the next read: push() copies whatever it keeps or hands out.
      this.push(this.scratch!.subarray(0, n), onFrame, true);
      return;
    }
    this.commitDirect(n, onFrame);
  }

  private commitDirect(n: number, onFrame: (frame: Frame) => void): void {
    const d = this.direct!;
    d.filled += n;
    if (d.filled < d.header.bodyBytes) return;
    this.direct = undefined;
    if (!d.target) return; // withdrawn: the frame is dropped
    const { type, name, requestId, bodyBytes } = d.header;
    onFrame({ type, name, requestId, body: d.target.subarray(0, bodyBytes) });
  }

  /**
   * The buffer a sink gave for request `requestId` must not be written to any more (its request was
   * cancelled or timed out): the rest of that body is read and dropped. Returns true if it was in use.
   */
  withdrawSink(requestId: number): boolean {
    const d = this.direct;
    if (!d || !d.target || d.header.requestId !== requestId) return false;
    d.target = undefined;
    return true;
  }

  /** The request whose body is being read into a sink's buffer right now, if any. */
  get sinkRequestId(): number | undefined {
    return this.direct?.target ? this.direct.header.requestId : undefined;
  }

  private scratchBuffer(): Buffer {
    this.scratch ??= Buffer.allocUnsafe(SCRATCH_BYTES);
    return this.scratch;
  }

  /**
   * Feeds bytes; calls onFrame for each complete frame. Throws a ProtocolError at the first bad header.
   * `transient`: the caller reuses `chunk`'s memory afterwards, so nothing may keep a view of it.
   */
  push(chunk: Buffer, onFrame: (frame: Frame) => void, transient = false): void {
    if (this.direct) {
      chunk = this.feedDirect(chunk, onFrame);
      if (chunk.length === 0) return;
    }
    if (transient && this.end === this.start) {
      // Whole small frames straight from the caller's buffer, each body copied out (they are small).
      chunk = this.frameWhole(chunk, onFrame);
      if (chunk.length === 0 || this.direct) return;
      chunk = Buffer.from(chunk);
    }
    this.append(chunk);
    while (this.end - this.start >= HEADER_BYTES) {
      const b = this.buf;
      const o = this.start;
      const h = this.header(b, o);
      const total = HEADER_BYTES + h.bodyBytes;
      if (this.end - o < total) {
        if (this.toSink(b, o, this.end, h)) {
          this.prefixChecked = false;
          this.start = this.end;
          break;
        }
        this.frameBytes = total;
        // A REPORT that announces 63,000 receipts is refused on its first bytes, not after 8 MiB (issue 10).
        this.prefixChecked ||= Messages[h.name].codec.checkPrefix(b.subarray(o + HEADER_BYTES, this.end));
        break;
      }
      this.frameBytes = 0;
      this.prefixChecked = false;
      this.start = o + total;
      onFrame({ type: h.type, name: h.name, requestId: h.requestId, body: b.subarray(o + HEADER_BYTES, o + total) });
    }
    if (this.start === this.end) {
      // Nothing pending: drop the reference so a finished frame's memory can be collected.
      this.buf = EMPTY;
      this.start = this.end = 0;
    }
  }

  /** Copies the next bytes of a body read in place (bytes from a 'data' event); returns what follows it. */
  private feedDirect(chunk: Buffer, onFrame: (frame: Frame) => void): Buffer {
    const d = this.direct!;
    const n = Math.min(chunk.length, d.header.bodyBytes - d.filled);
    if (d.target) chunk.copy(d.target, d.filled, 0, n);
    this.commitDirect(n, onFrame);
    return chunk.subarray(n);
  }

  /**
   * Hands out every whole frame at the start of `chunk` (bodies copied, since `chunk` is reused) and
   * returns what is left: the start of a frame, unless that frame's body went to a sink.
   */
  private frameWhole(chunk: Buffer, onFrame: (frame: Frame) => void): Buffer {
    let o = 0;
    while (chunk.length - o >= HEADER_BYTES) {
      const h = this.header(chunk, o);
      const total = HEADER_BYTES + h.bodyBytes;
      if (chunk.length - o < total) {
        if (this.toSink(chunk, o, chunk.length, h)) return EMPTY;
        break;
      }
      onFrame({ type: h.type, name: h.name, requestId: h.requestId, body: Buffer.from(chunk.subarray(o + HEADER_BYTES, o + total)) });
      o += total;
    }
    return chunk.subarray(o);
  }

  /** The header at `o` in `b` (whole there), every limit checked from it alone. */
  private header(b: Buffer, o: number): FrameHeader {
    const version = b[o]!;
    if (version < PROTOCOL_VERSIONS.min || version > PROTOCOL_VERSIONS.max) {
      throw version >= 1 && version <= PLAUSIBLE_VERSION_MAX ? new VersionError(version, PROTOCOL_VERSIONS) : new BadVersionError(version);
    }
    const type = b[o + 1]!;
    const name = messageByCode[type];
    if (name === undefined) throw new UnknownMessageError(type);
    const bodyBytes = b.readUInt32BE(o + 6);
    if (bodyBytes > this.maxBodyBytes) throw new FrameTooLargeError(bodyBytes, this.maxBodyBytes);
    return { type, name, requestId: b.readUInt32BE(o + 2), bodyBytes };
  }

  /**
   * An incomplete frame starts at `from` in `b` (its bytes up to `to` have arrived): if the sink takes its
   * body, the bytes of it already here are copied there and the rest will be read in place.
   */
  private toSink(b: Buffer, from: number, to: number, header: FrameHeader): boolean {
    if (!this.sink || header.bodyBytes < SINK_MIN_BODY_BYTES) return false;
    const target = this.sink(header);
    if (!target || target.length < header.bodyBytes) return false;
    const have = to - from - HEADER_BYTES;
    b.copy(target, 0, from + HEADER_BYTES, to);
    this.direct = { header, target, filled: have };
    this.frameBytes = 0;
    return true;
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
  return encodeFrameWith(name, requestId, body, FRESH_MEMORY).frame;
}

/** Where large frames' memory comes from and goes back to (protocol/frame-buffers.ts). */
export interface FrameMemory {
  take(bytes: number): Buffer | undefined;
  give(buf: Buffer): void;
}

/** No reused memory: every frame in a fresh allocation. */
const FRESH_MEMORY: FrameMemory = { take: () => undefined, give: () => {} };

/**
 * Encodes a frame into memory from `memory` when it has some for the frame's size (the frame is the start
 * of it), else into a fresh allocation. Returns the frame and the buffer taken, if one was, for the caller to
 * give back once the frame is sent; if the encoding fails, it is given back here.
 */
export function encodeFrameWith<N extends MessageName>(name: N, requestId: number, body: Body<N>, memory: FrameMemory): { frame: Buffer; taken: Buffer | undefined } {
  const { code, codec } = Messages[name];
  const bodyBytes = (codec.size as (v: Body<N>) => number)(body);
  const taken = memory.take(HEADER_BYTES + bodyBytes);
  const frame = taken ? taken.subarray(0, HEADER_BYTES + bodyBytes) : Buffer.allocUnsafe(HEADER_BYTES + bodyBytes);
  try {
    writeHeader(frame, code, requestId, bodyBytes);
    (codec.write as (v: Body<N>, b: Buffer, o: number) => number)(body, frame, HEADER_BYTES);
  } catch (err) {
    if (taken) memory.give(taken);
    throw err;
  }
  return { frame, taken };
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

/**
 * A message's body encoded once, to be sent as the answer to many requests (Connection.replyEncoded): the
 * blacklist a tracker gives every peer that re-syncs, built once per version instead of once per peer.
 * Never written to after it is made: sockets may still be sending it.
 */
export interface EncodedBody<N extends MessageName> {
  readonly name: N;
  readonly bytes: Buffer;
}

export function encodeBody<N extends MessageName>(name: N, body: Body<N>): EncodedBody<N> {
  const { codec } = Messages[name];
  const bytes = Buffer.allocUnsafe((codec.size as (v: Body<N>) => number)(body));
  (codec.write as (v: Body<N>, b: Buffer, o: number) => number)(body, bytes, 0);
  return { name, bytes };
}

/** The header of a frame whose body is `body` (sent after it, as it is). */
export function encodeHeaderFor<N extends MessageName>(requestId: number, body: EncodedBody<N>): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_BYTES);
  writeHeader(buf, Messages[body.name].code, requestId, body.bytes.length);
  return buf;
}

/** Decodes a frame's body with its message's codec. Throws MalformedMessageError. */
export function decodeBody<N extends MessageName>(name: N, body: Buffer): Body<N> {
  return Messages[name].codec.decode(body) as Body<N>;
}
