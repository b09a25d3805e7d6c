/**
 * Schema-driven helpers, so that every message in the catalogue is covered without being listed here:
 * a reference encoder written from the specification (not from protocol/codec.ts), sample bodies, and
 * fast-check arbitraries for valid bodies.
 */
import fc from 'fast-check';
import type { FieldType, MessageName, Schema } from '../../protocol/index.js';
import { Messages } from '../../protocol/index.js';
import { bool, bytes, cat, str, text, u16, u32, u64, u8 } from './bytes.js';

type Value = unknown;
type Body = Record<string, Value>;

export const messageNames = Object.keys(Messages) as MessageName[];

export function schemaOf(name: MessageName): Schema {
  return Messages[name].codec.schema as Schema;
}

/** Encodes a body field by field with plain Buffer writes, the way protocol/README.md describes it. */
export function referenceEncode(schema: Schema, body: Body): Buffer {
  return cat(...Object.keys(schema).map((field) => referenceField(schema[field]!, body[field])));
}

function referenceField(type: FieldType, value: Value): Buffer {
  if (typeof type === 'object') {
    const items = value as Body[];
    return cat(u32(items.length), ...items.map((item) => referenceEncode(type.list, item)));
  }
  switch (type) {
    case 'u8':
      return u8(value as number);
    case 'u16':
      return u16(value as number);
    case 'u32':
      return u32(value as number);
    case 'u64':
      return u64(value as number);
    case 'bool':
      return bool(value as boolean);
    case 'id32':
    case 'sig64':
    case 'rest':
      return value as Buffer;
    case 'str':
      return str(value as string);
    case 'text':
      return text(value as string);
    case 'bytes':
      return bytes(value as Buffer);
  }
  throw new Error(`unknown field type ${String(type)}`);
}

/**
 * A body with every field set to a distinctive value: the largest value of each integer type, multi-byte
 * UTF-8 in strings, and two items in each list, so an encoder that mixes up widths or orders shows.
 */
export function typicalBody(schema: Schema, seed = 1): Body {
  const body: Body = {};
  let i = 0;
  for (const field of Object.keys(schema)) body[field] = typicalValue(schema[field]!, seed + i++);
  return body;
}

function typicalValue(type: FieldType, seed: number): Value {
  if (typeof type === 'object') return [typicalBody(type.list, seed * 7), typicalBody(type.list, seed * 7 + 3)];
  switch (type) {
    case 'u8':
      return 0xff - (seed % 16);
    case 'u16':
      return 0xffff - seed;
    case 'u32':
      return 0xffffffff - seed;
    case 'u64':
      return Number.MAX_SAFE_INTEGER - seed;
    case 'bool':
      return seed % 2 === 1;
    case 'id32':
      return Buffer.alloc(32, seed & 0xff);
    case 'sig64':
      return Buffer.alloc(64, (seed * 3) & 0xff);
    case 'str':
      return `ünï-${seed}-名前`;
    case 'text':
      return `{"seed":${seed},"note":"ñ ✓"}`;
    case 'bytes':
      return Buffer.from([seed & 0xff, 0, 0xff, 0x10]);
    case 'rest':
      return Buffer.from(`tail-${seed}`);
  }
  throw new Error(`unknown field type ${String(type)}`);
}

/** A body with every field at its smallest: zeros, false, empty strings, bytes and lists. */
export function emptyBody(schema: Schema): Body {
  const body: Body = {};
  for (const field of Object.keys(schema)) body[field] = emptyValue(schema[field]!);
  return body;
}

function emptyValue(type: FieldType): Value {
  if (typeof type === 'object') return [];
  switch (type) {
    case 'u8':
    case 'u16':
    case 'u32':
    case 'u64':
      return 0;
    case 'bool':
      return false;
    case 'id32':
      return Buffer.alloc(32);
    case 'sig64':
      return Buffer.alloc(64);
    case 'str':
    case 'text':
      return '';
    case 'bytes':
    case 'rest':
      return Buffer.alloc(0);
  }
  throw new Error(`unknown field type ${String(type)}`);
}

/** Every field type the catalogue uses, lists included (as 'list'). */
export function fieldTypesIn(schema: Schema, into = new Set<string>()): Set<string> {
  for (const type of Object.values(schema)) {
    if (typeof type === 'object') {
      into.add('list');
      fieldTypesIn(type.list, into);
    } else {
      into.add(type);
    }
  }
  return into;
}

const buf = (min: number, max: number): fc.Arbitrary<Buffer> =>
  fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a));

/** Valid values of a field type; strings are whole code points (no lone surrogates), so UTF-8 round-trips. */
export function arbitraryField(type: FieldType): fc.Arbitrary<Value> {
  if (typeof type === 'object') return fc.array(arbitraryBody(type.list), { maxLength: 4 });
  switch (type) {
    case 'u8':
      return fc.integer({ min: 0, max: 0xff });
    case 'u16':
      return fc.integer({ min: 0, max: 0xffff });
    case 'u32':
      return fc.integer({ min: 0, max: 0xffffffff });
    case 'u64':
      return fc.oneof(fc.maxSafeNat(), fc.constantFrom(0, 2 ** 32, Number.MAX_SAFE_INTEGER));
    case 'bool':
      return fc.boolean();
    case 'id32':
      return buf(32, 32);
    case 'sig64':
      return buf(64, 64);
    case 'str':
    case 'text':
      return fc.string({ unit: 'binary', maxLength: 24 });
    case 'bytes':
    case 'rest':
      return buf(0, 64);
  }
  throw new Error(`unknown field type ${String(type)}`);
}

export function arbitraryBody(schema: Schema): fc.Arbitrary<Body> {
  const fields: Record<string, fc.Arbitrary<Value>> = {};
  for (const field of Object.keys(schema)) fields[field] = arbitraryField(schema[field]!);
  // Plain objects, as the decoder returns (fast-check would otherwise mix in null-prototype records).
  return fc.record(fields, { noNullPrototype: true });
}

/** A message name with a valid random body for it. */
export const arbitraryMessage: fc.Arbitrary<{ name: MessageName; body: Body }> = fc
  .constantFrom(...messageNames)
  .chain((name) => arbitraryBody(schemaOf(name)).map((body) => ({ name, body })));
