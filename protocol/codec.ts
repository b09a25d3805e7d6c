/**
 * A tiny schema language for message bodies. One schema drives three things: the encoded size, the
 * encoder (hand-written, allocation-free given a target buffer) and the decoder (a binary-parser compiled
 * from the same schema). Declaring a message once keeps both directions in step by construction.
 */
import { Parser } from 'binary-parser';
import { MalformedMessageError, P2PError, ProtocolError, type ErrorCode } from './errors.js';

/** Field types. Integers are big-endian; u64 decodes to a JS number and refuses values above 2^53. */
export type FieldType =
  | 'u8'
  | 'u16'
  | 'u32'
  | 'u64'
  | 'bool'
  | 'id32' // exactly 32 bytes (SHA-256 digests, Ed25519 public keys, nonces)
  | 'sig64' // exactly 64 bytes (Ed25519 signatures)
  | 'str' // u16 byte length, then UTF-8
  | 'text' // u32 byte length, then UTF-8
  | 'bytes' // u32 byte length, then raw bytes
  | 'rest' // every remaining byte of the body; only as the last field
  | ListType;

export interface ListType {
  readonly list: Schema;
  /**
   * Most items a receiver takes. A longer count fails the decode before a single item is read (a list of
   * small items costs far more to decode than its bytes to send), with `tooMany` as the error's code
   * (default P2P_MALFORMED).
   */
  readonly max?: number;
  readonly tooMany?: ErrorCode;
}

export type Schema = { readonly [field: string]: FieldType };

type ValueOf<T extends FieldType> = T extends 'u8' | 'u16' | 'u32' | 'u64'
  ? number
  : T extends 'bool'
    ? boolean
    : T extends 'str' | 'text'
      ? string
      : T extends ListType
        ? Array<Decoded<T['list']>>
        : Buffer;

export type Decoded<S extends Schema> = { -readonly [K in keyof S]: ValueOf<S[K]> };

export interface Codec<S extends Schema> {
  readonly schema: S;
  /** Bytes needed to encode `value`. Throws P2P_BAD_REQUEST for a value that cannot be encoded. */
  size(value: Decoded<S>): number;
  /** Writes `value` at `offset`, returns the offset after it. `buf` must have `size(value)` bytes free. */
  write(value: Decoded<S>, buf: Buffer, offset: number): number;
  /** Decodes a whole body; throws MalformedMessageError unless the body is exactly one valid value. */
  decode(body: Buffer): Decoded<S>;
  /**
   * Checks the first bytes of a body still on its way against the schema's list maxima: throws
   * TooManyItemsError as soon as a capped list's count has arrived and is over its maximum, so the rest is
   * never buffered. Returns true once nothing more can be checked early, false while it needs more bytes.
   */
  checkPrefix(prefix: Buffer): boolean;
}

const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

function fixedSize(type: FieldType): number | undefined {
  switch (type) {
    case 'u8':
    case 'bool':
      return 1;
    case 'u16':
      return 2;
    case 'u32':
      return 4;
    case 'u64':
      return 8;
    case 'id32':
      return 32;
    case 'sig64':
      return 64;
    default:
      return undefined;
  }
}

function bad(field: string, why: string): never {
  throw new P2PError('P2P_BAD_REQUEST', `cannot encode field ${field}: ${why}`);
}

/** Bytes one field of a value takes, and writing it: one closure per field, made once per schema. */
type FieldSizer = (value: Record<string, unknown>) => number;
type FieldWriter = (value: Record<string, unknown>, buf: Buffer, offset: number) => number;

/**
 * The encoder of a schema: a sizer and a writer per field, each reading its own property. Interpreting the
 * schema per value (a `for...in` and a switch per field, BigInt for every u64, a native call per string)
 * cost about 0.9 µs per item of a 10,000-hit SEARCH_RESULT, as long as the search itself (issue 12).
 */
function compileEncoder(schema: Schema): { size: (value: Record<string, unknown>) => number; write: FieldWriter } {
  const names = Object.keys(schema);
  const sizers = names.map((name) => fieldSizer(name, schema[name]!));
  const writers = names.map((name) => fieldWriter(name, schema[name]!));
  const fixed = names.reduce<number | undefined>((sum, name) => {
    const bytes = fixedSize(schema[name]!);
    return sum === undefined || bytes === undefined ? undefined : sum + bytes;
  }, 0);
  return {
    size:
      fixed !== undefined
        ? () => fixed
        : (value) => {
            let total = 0;
            for (let i = 0; i < sizers.length; i++) total += sizers[i]!(value);
            return total;
          },
    write: (value, buf, offset) => {
      for (let i = 0; i < writers.length; i++) offset = writers[i]!(value, buf, offset);
      return offset;
    },
  };
}

function fieldSizer(name: string, type: FieldType): FieldSizer {
  const fixed = fixedSize(type);
  if (fixed !== undefined) return () => fixed;
  if (typeof type === 'object') {
    const item = compileEncoder(type.list).size;
    return (value) => {
      const items = value[name];
      if (!Array.isArray(items)) bad(name, 'expected a list');
      let total = 4;
      for (let i = 0; i < items.length; i++) total += item(items[i] as Record<string, unknown>);
      return total;
    };
  }
  switch (type) {
    case 'str':
      return (value) => {
        const n = utf8Length(value[name] as string);
        if (n > U16_MAX) bad(name, `string of ${n} bytes exceeds ${U16_MAX}`);
        return 2 + n;
      };
    case 'text':
      return (value) => 4 + utf8Length(value[name] as string);
    case 'bytes':
      return (value) => 4 + (value[name] as Buffer).length;
    case 'rest':
      return (value) => (value[name] as Buffer).length;
  }
  return bad(name, `unknown type ${String(type)}`);
}

function fieldWriter(name: string, type: FieldType): FieldWriter {
  if (typeof type === 'object') {
    const item = compileEncoder(type.list).write;
    return (value, buf, offset) => {
      const items = value[name] as Array<Record<string, unknown>>;
      buf.writeUInt32BE(items.length, offset);
      offset += 4;
      for (let i = 0; i < items.length; i++) offset = item(items[i]!, buf, offset);
      return offset;
    };
  }
  switch (type) {
    case 'u8':
      return (value, buf, offset) => buf.writeUInt8(value[name] as number, offset);
    case 'bool':
      return (value, buf, offset) => buf.writeUInt8(value[name] ? 1 : 0, offset);
    case 'u16':
      return (value, buf, offset) => buf.writeUInt16BE(value[name] as number, offset);
    case 'u32':
      return (value, buf, offset) => buf.writeUInt32BE(value[name] as number, offset);
    case 'u64':
      return (value, buf, offset) => {
        const n = value[name] as number;
        if (!Number.isSafeInteger(n) || n < 0) bad(name, `${n} is not a non-negative safe integer`);
        // Two u32 halves: exact below 2^53, and no BigInt made per value.
        const high = Math.floor(n / 2 ** 32);
        buf.writeUInt32BE(high, offset);
        return buf.writeUInt32BE(n - high * 2 ** 32, offset + 4);
      };
    case 'id32':
    case 'sig64': {
      const want = type === 'id32' ? 32 : 64;
      return (value, buf, offset) => {
        const b = value[name] as Buffer;
        if (!Buffer.isBuffer(b) || b.length !== want) bad(name, `expected ${want} bytes`);
        buf.set(b, offset);
        return offset + want;
      };
    }
    case 'str':
      return (value, buf, offset) => {
        const n = writeUtf8(value[name] as string, buf, offset + 2);
        buf.writeUInt16BE(n, offset);
        return offset + 2 + n;
      };
    case 'text':
      return (value, buf, offset) => {
        const n = writeUtf8(value[name] as string, buf, offset + 4);
        buf.writeUInt32BE(n, offset);
        return offset + 4 + n;
      };
    case 'bytes':
      return (value, buf, offset) => {
        const b = value[name] as Buffer;
        if (b.length > U32_MAX) bad(name, 'too long');
        buf.writeUInt32BE(b.length, offset);
        return offset + 4 + b.copy(buf, offset + 4);
      };
    case 'rest':
      return (value, buf, offset) => offset + (value[name] as Buffer).copy(buf, offset);
  }
  return bad(name, `unknown type ${String(type)}`);
}

/** Strings up to this long are measured and written by a loop while they are ASCII (no native call). */
const SHORT_STRING = 64;

/**
 * UTF-8 bytes of `s`, as Buffer.byteLength counts them (a lone surrogate as the 3 bytes of U+FFFD): a short
 * string is counted in JS, with no native call (the codec measures every string it encodes, and a tracker
 * every name of every REGISTER against its per-peer cap).
 */
export function utf8Length(s: string): number {
  if (typeof s !== 'string') throw new TypeError(`expected a string, got ${typeof s}`);
  if (s.length > SHORT_STRING) return Buffer.byteLength(s, 'utf8');
  let bytes = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 2; // a pair: 4 bytes for 2 units
      i++;
    } else bytes += 2;
  }
  return bytes;
}

/** Writes `s` as UTF-8 at `offset` (the size was counted first, so it fits); returns the bytes written. */
function writeUtf8(s: string, buf: Buffer, offset: number): number {
  if (s.length <= SHORT_STRING) {
    let i = 0;
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      buf[offset + i] = c;
    }
    if (i === s.length) return i;
  }
  return buf.write(s, offset, 'utf8');
}

const unwrap = (o: { v: unknown }): unknown => o.v;
const toSafeNumber = (v: unknown): number => {
  const big = v as bigint;
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('u64 above 2^53');
  return Number(big);
};

/**
 * binary-parser never checks that a length prefix fits the bytes that remain: it just slices short.
 * Every variable-length field advances the offset by its declared length, so a single check at the end
 * (the final offset must equal the body length) catches every lie about lengths, and a lie in the middle
 * makes the next fixed-size read throw a RangeError.
 */
/** Fewest bytes one value of `schema` can take: bounds how many list items the remaining bytes can hold. */
function minBytes(schema: Schema): number {
  let total = 0;
  for (const name in schema) {
    const type = schema[name]!;
    total += typeof type === 'object' ? 4 : (fixedSize(type) ?? (type === 'str' ? 2 : type === 'rest' ? 0 : 4));
  }
  return total;
}

/** A list longer than its schema's `max`: refused from its count alone, and the connection is closed. */
export class TooManyItemsError extends ProtocolError {
  constructor(field: string, count: number, max: number, code: ErrorCode = 'P2P_MALFORMED') {
    super(code, `${field}: ${count} items; at most ${max} are accepted`);
  }
}

/**
 * The early check of checkPrefix: walks the top-level fields over the bytes that have arrived, skipping
 * fixed fields and length-prefixed ones, up to the first list. A capped list's count is checked; an
 * uncapped one would need its items walked, so the early check stops there (the whole decode checks the rest).
 */
function checkListCaps(schema: Schema, prefix: Buffer): boolean {
  let o = 0;
  for (const name in schema) {
    const type = schema[name]!;
    const fixed = fixedSize(type);
    if (fixed !== undefined) {
      o += fixed;
      continue;
    }
    if (typeof type === 'object') {
      if (type.max === undefined) return true;
      if (prefix.length < o + 4) return false;
      const n = prefix.readUInt32BE(o);
      if (n > type.max) throw new TooManyItemsError(name, n, type.max, type.tooMany);
      return true;
    }
    if (type === 'rest') return true;
    const lengthBytes = type === 'str' ? 2 : 4;
    if (prefix.length < o + lengthBytes) return false;
    o += lengthBytes + (lengthBytes === 2 ? prefix.readUInt16BE(o) : prefix.readUInt32BE(o));
  }
  return true;
}

/** Length of the body being decoded (decode is synchronous, so one slot suffices). */
let decodingBytes = 0;

function buildParser(schema: Schema): Parser {
  let p = new Parser();
  for (const name in schema) {
    const type = schema[name]!;
    if (typeof type === 'object') {
      const itemBytes = Math.max(1, minBytes(type.list));
      const { max, tooMany } = type;
      const list = new Parser()
        .uint32be('n')
        .saveOffset('at')
        .array('v', {
          type: buildParser(type.list),
          length: function (this: { n: number; at: number }) {
            if (max !== undefined && this.n > max) throw new TooManyItemsError(name, this.n, max, tooMany);
            if (this.n * itemBytes > decodingBytes - this.at) throw new RangeError(`list of ${this.n} items cannot fit`);
            return this.n;
          },
        });
      p = p.nest(name, { type: list, formatter: unwrap as (o: unknown) => unknown });
      continue;
    }
    switch (type) {
      case 'u8':
        p = p.uint8(name);
        break;
      case 'bool':
        p = p.uint8(name, { formatter: (v: unknown) => v !== 0 });
        break;
      case 'u16':
        p = p.uint16be(name);
        break;
      case 'u32':
        p = p.uint32be(name);
        break;
      case 'u64':
        p = p.uint64be(name, { formatter: toSafeNumber });
        break;
      case 'id32':
        p = p.buffer(name, { length: 32, clone: true });
        break;
      case 'sig64':
        p = p.buffer(name, { length: 64, clone: true });
        break;
      case 'str':
        p = p.nest(name, {
          type: new Parser().uint16be('n').string('v', { length: 'n', encoding: 'utf8' }),
          formatter: unwrap as (o: unknown) => unknown,
        });
        break;
      case 'text':
        p = p.nest(name, {
          type: new Parser().uint32be('n').string('v', { length: 'n', encoding: 'utf8' }),
          formatter: unwrap as (o: unknown) => unknown,
        });
        break;
      case 'bytes':
        p = p.nest(name, {
          type: new Parser().uint32be('n').buffer('v', { length: 'n' }),
          formatter: unwrap as (o: unknown) => unknown,
        });
        break;
      case 'rest':
        p = p.buffer(name, { readUntil: 'eof' });
        break;
    }
  }
  return p;
}

/** The decoder of a whole body: the schema's fields, then the offset where they end. */
function compileParser(schema: Schema): Parser {
  const parser = new Parser().nest('m', { type: Object.keys(schema).length ? buildParser(schema) : new Parser() }).saveOffset('end');
  parser.compile();
  return parser;
}

export function defineCodec<S extends Schema>(schema: S, what = 'message'): Codec<S> {
  const names = Object.keys(schema);
  names.forEach((name, i) => {
    if (schema[name] === 'rest' && i !== names.length - 1) throw new Error(`'rest' must be the last field (${name})`);
  });
  const encoder = compileEncoder(schema);
  const hasRest = names.length > 0 && schema[names[names.length - 1]!] === 'rest';
  // Built and compiled on the first decode, not here: compiling the whole catalogue's parsers took about
  // a tenth of every `p2p` command's start-up, and most programs decode only a few message types (issue 8).
  let parser: Parser | undefined;
  const capped = names.some((n) => {
    const type = schema[n]!;
    return typeof type === 'object' && type.max !== undefined;
  });
  return {
    schema,
    checkPrefix: capped ? (prefix) => checkListCaps(schema, prefix) : () => true,
    // A value the sizer cannot read (a field missing, say) is the sender's bug, not a bad request: its
    // TypeError goes up as it is (an answer that fails so is P2P_INTERNAL); bad() throws P2P_BAD_REQUEST.
    size: (value) => encoder.size(value as Record<string, unknown>),
    write: (value, buf, offset) => {
      try {
        return encoder.write(value as Record<string, unknown>, buf, offset);
      } catch (err) {
        if (err instanceof P2PError) throw err;
        throw new P2PError('P2P_BAD_REQUEST', `cannot encode ${what}: ${(err as Error).message}`, { cause: err });
      }
    },
    decode(body) {
      parser ??= compileParser(schema);
      let out: { m: Decoded<S>; end: number };
      try {
        decodingBytes = body.length;
        out = parser.parse(body) as { m: Decoded<S>; end: number };
      } catch (err) {
        if (err instanceof TooManyItemsError) throw err;
        throw new MalformedMessageError(what, err);
      }
      // binary-parser's readUntil:'eof' does not advance the offset, so with a trailing `rest` field the
      // saved offset is where the rest begins.
      if (hasRest ? out.end > body.length : out.end !== body.length) throw new MalformedMessageError(`${what}: ${body.length} bytes, fields use ${out.end}`);
      return out.m;
    },
  };
}
