import t from 'tap';
import {
  MalformedMessageError,
  MAX_REPORT_RECEIPTS,
  Messages,
  P2PError,
  ProtocolError,
  TooManyItemsError,
  decodeBody,
  defineCodec,
  encodeFrame,
  messageByCode,
  type MessageName,
} from '../../protocol/index.js';
import { bool, cat, filled, frame, hex, list, str, text, u16, u32, u64, u8 } from '../helpers/bytes.js';
import { BudgetExceeded, decodeWithBudget } from '../helpers/guarded.js';
import { roundTripTable, type Sample } from '../helpers/roundtrip.js';
import type { Tap } from '../helpers/tap.js';
import { handBuiltSamples } from '../helpers/samples.js';
import { emptyBody, fieldTypesIn, messageNames, referenceEncode, schemaOf, typicalBody } from '../helpers/schema.js';

t.test('hand-built frames from the specification', (t) => {
  roundTripTable(t, handBuiltSamples);
  t.end();
});

t.test('the hand-built table covers the representative messages', (t) => {
  const covered = new Set(handBuiltSamples.map((s) => s.name));
  for (const name of ['OK', 'ERROR', 'PING', 'HELLO', 'GET_CHUNK', 'CHUNK', 'REGISTER', 'SEARCH_RESULT', 'LOOKUP_RESULT', 'ADMIN_BLACKLIST', 'CONTROL'] as const) {
    t.ok(covered.has(name), `${name} has a hand-built frame`);
  }
  t.end();
});

t.test('every message in the catalogue round-trips', (t) => {
  // Built from each message's schema, so a message added to protocol/messages.ts is covered here at once.
  const generated: Sample[] = [];
  for (const name of messageNames) {
    const { code } = Messages[name];
    const schema = schemaOf(name);
    for (const [variant, body] of [
      ['typical', typicalBody(schema, code)],
      ['empty', emptyBody(schema)],
    ] as const) {
      generated.push({
        name,
        requestId: code * 1000 + 1,
        body,
        frame: frame(code, code * 1000 + 1, referenceEncode(schema, body)),
        title: `${name} (${variant} body)`,
      } as Sample);
    }
  }
  roundTripTable(t, generated);
  t.end();
});

t.test('the catalogue', (t) => {
  const codes = messageNames.map((n) => Messages[n].code);
  t.equal(new Set(codes).size, codes.length, 'no two messages share a code');
  for (const name of messageNames) {
    const { code, kind } = Messages[name];
    t.ok(Number.isInteger(code) && code > 0 && code <= 0xff, `${name}: code fits the u8 type byte`);
    t.equal(messageByCode[code], name, `${name}: the reverse map leads back to it`);
    t.ok(['request', 'response', 'event'].includes(kind), `${name}: kind ${kind}`);
    const fields = Object.keys(schemaOf(name));
    fields.forEach((field, i) => {
      if (schemaOf(name)[field] === 'rest') t.equal(i, fields.length - 1, `${name}: 'rest' is the last field`);
    });
  }
  t.equal(messageByCode.filter(Boolean).length, messageNames.length, 'the reverse map holds every message and nothing else');
  t.equal(messageByCode[0], undefined, 'type 0 is not a message');
  const used = new Set<string>();
  for (const name of messageNames) fieldTypesIn(schemaOf(name), used);
  for (const type of ['u8', 'u16', 'u32', 'u64', 'bool', 'id32', 'sig64', 'str', 'text', 'bytes', 'rest', 'list']) {
    t.ok(used.has(type), `field type ${type} is exercised by the generated round trips`);
  }
  t.end();
});

/** Decoding `body` as `name` must fail with P2P_MALFORMED, as a ProtocolError. */
function assertMalformed(t: Tap, name: MessageName, body: Buffer, why: string): void {
  let thrown: unknown;
  try {
    decodeBody(name, body);
  } catch (err) {
    thrown = err;
  }
  t.ok(thrown instanceof MalformedMessageError, `${why}: MalformedMessageError (got ${String(thrown)})`);
  t.ok(thrown instanceof ProtocolError, `${why}: a ProtocolError, so the connection is closed`);
  t.equal((thrown as P2PError | undefined)?.code, 'P2P_MALFORMED', `${why}: code P2P_MALFORMED`);
}

t.test('lying length prefixes are refused', (t) => {
  const fileId = filled(32, 7);
  // str: SEARCH { text: 'iso', limit: 100 }
  t.doesNotThrow(() => decodeBody('SEARCH', cat(hex('0003'), Buffer.from('iso'), u32(100))), 'the honest body decodes');
  assertMalformed(t, 'SEARCH', cat(hex('0004'), Buffer.from('iso'), u32(100)), 'str length one too long');
  assertMalformed(t, 'SEARCH', cat(hex('0002'), Buffer.from('iso'), u32(100)), 'str length one too short');
  assertMalformed(t, 'SEARCH', cat(hex('ffff'), Buffer.from('iso'), u32(100)), 'str length far beyond the body');
  // text: CONTROL { command: 'get', args: '{}' }
  t.doesNotThrow(() => decodeBody('CONTROL', cat(str('get'), text('{}'))));
  assertMalformed(t, 'CONTROL', cat(str('get'), hex('00000003'), Buffer.from('{}')), 'text length too long');
  assertMalformed(t, 'CONTROL', cat(str('get'), hex('00000001'), Buffer.from('{}')), 'text length too short');
  assertMalformed(t, 'CONTROL', cat(str('get'), hex('ffffffff'), Buffer.from('{}')), 'text length 2^32-1');
  // bytes: HAVE { complete, bits }
  t.doesNotThrow(() => decodeBody('HAVE', cat(bool(true), hex('00000002 ffff'))));
  assertMalformed(t, 'HAVE', cat(bool(true), hex('00000003 ffff')), 'bytes length too long');
  assertMalformed(t, 'HAVE', cat(bool(true), hex('00000001 ffff')), 'bytes length too short');
  assertMalformed(t, 'HAVE', cat(bool(true), hex('80000000 ffff')), 'bytes length above 2^31');
  // lists: REGISTER { files: [...] }
  const entry = cat(fileId, u64(5), str('a.txt'), bool(true));
  t.doesNotThrow(() => decodeBody('REGISTER', list(entry)));
  assertMalformed(t, 'REGISTER', cat(u32(2), entry), 'list count one too many');
  assertMalformed(t, 'REGISTER', cat(u32(1), entry, entry), 'list count one too few');
  assertMalformed(t, 'REGISTER', cat(u32(0), entry), 'list count zero with an item after it');
  assertMalformed(t, 'REGISTER', cat(u32(0xffffffff), entry), 'list count 2^32-1');
  assertMalformed(t, 'REGISTER', list(cat(fileId, u64(5), hex('0009'), Buffer.from('a.txt'), bool(true))), 'a lie inside a list item');
  assertMalformed(t, 'LOOKUP_RESULT', cat(u64(1), u32(3)), 'list count with no items at all');
  t.end();
});

t.test('a list count larger than the body can hold is refused without building the list (15-byte UNREGISTER)', (t) => {
  // A 5-byte UNREGISTER body (a 15-byte frame) that claims 2^32-1 ids. Each id is 32 bytes, so none can
  // be there; a decoder that believes the count loops four billion times and the process runs out of
  // memory. decodeWithBudget makes such a decoder fail here at once instead of crashing the test run.
  const body = cat(bool(false), u32(0xffffffff));
  let thrown: unknown;
  try {
    decodeWithBudget('UNREGISTER', body);
  } catch (err) {
    thrown = err;
  }
  t.notOk(thrown instanceof BudgetExceeded, `the decoder does not build ids past the end of the body (${String(thrown)})`);
  t.equal((thrown as P2PError | undefined)?.code, 'P2P_MALFORMED', 'the body is refused as P2P_MALFORMED');
  for (const [name, bytes, code] of [
    ['BLACKLIST_CHANGED', cat(u32(0xffffffff), u32(0)), 'P2P_MALFORMED'],
    // A list with a maximum is refused by its own code (the catalogue names it).
    ['REPORT', cat(filled(32, 1), str(''), u8(0), u32(0), u32(0xffffffff)), 'P2P_TOO_MANY_RECEIPTS'],
    ['SEARCH_RESULT', cat(u32(0xffffffff), bool(false)), 'P2P_MALFORMED'],
  ] as const) {
    t.throws(() => decodeWithBudget(name, bytes), { code }, `${name} with a count of 2^32-1 is refused (${code})`);
  }
  t.end();
});

t.test("a count above a list's maximum is refused from the count alone, before an item is read (issue 10)", (t) => {
  const receipt = cat(filled(32, 2), u32(7), filled(32, 3), filled(64, 4));
  const report = (n: number): Buffer => cat(filled(32, 1), str('r'), u8(0), u32(0), u32(n), ...new Array<Buffer>(n).fill(receipt));
  const full = decodeWithBudget('REPORT', report(MAX_REPORT_RECEIPTS)) as { receipts: unknown[] };
  t.equal(full.receipts.length, MAX_REPORT_RECEIPTS, `${MAX_REPORT_RECEIPTS} receipts (the maximum) decode`);
  let thrown: unknown;
  try {
    // The count says one more than the maximum, and no item follows: only the count can have been read.
    decodeWithBudget('REPORT', cat(filled(32, 1), str('r'), u8(0), u32(0), u32(MAX_REPORT_RECEIPTS + 1)));
  } catch (err) {
    thrown = err;
  }
  t.type(thrown, TooManyItemsError, 'one more is refused from the count, not as a body too short for it');
  t.ok(thrown instanceof ProtocolError, 'a ProtocolError: the connection that sent it is closed');
  t.equal((thrown as P2PError).code, 'P2P_TOO_MANY_RECEIPTS', 'with the code the catalogue names');
  t.throws(() => decodeWithBudget('REPORT', report(MAX_REPORT_RECEIPTS + 1)), { code: 'P2P_TOO_MANY_RECEIPTS' }, 'so is a body that really holds them');
  t.end();
});

t.test('bodies of the wrong length are refused', (t) => {
  const getChunk = cat(filled(32, 1), u32(5));
  assertMalformed(t, 'GET_CHUNK', cat(getChunk, hex('00')), 'one trailing byte after a fixed body');
  assertMalformed(t, 'GET_CHUNK', getChunk.subarray(0, 35), 'a fixed body one byte short');
  assertMalformed(t, 'OK', hex('00'), 'a byte in an empty body');
  assertMalformed(t, 'PING', hex('0000000000'), 'bytes in an empty request');
  assertMalformed(t, 'WELCOME', cat(str('p'), str('h'), u16(1), u32(1), str('r'), u64(1), str('m'), hex('00000002 00')), 'a bytes field that declares 2 bytes and has 1');
  assertMalformed(t, 'SEARCH', cat(str('iso'), u32(100), hex('00')), 'a trailing byte after a variable body');
  assertMalformed(t, 'SEARCH', cat(str('iso'), u16(100)), 'a u32 cut short');
  assertMalformed(t, 'SEARCH', Buffer.alloc(0), 'an empty body for a message with fields');
  t.end();
});

t.test('u64 values above 2^53 are refused rather than rounded', (t) => {
  const changed = (term: Buffer): Buffer => cat(str('127.0.0.1:7000'), term);
  t.equal(decodeBody('TRACKER_CHANGED', changed(u64(2 ** 53 - 1))).term, Number.MAX_SAFE_INTEGER, '2^53-1 is the largest accepted');
  assertMalformed(t, 'TRACKER_CHANGED', changed(u64(2n ** 53n)), 'u64 of exactly 2^53');
  assertMalformed(t, 'TRACKER_CHANGED', changed(u64(2n ** 53n + 1n)), 'u64 of 2^53+1');
  assertMalformed(t, 'TRACKER_CHANGED', changed(hex('ffffffffffffffff')), 'u64 of 2^64-1');
  assertMalformed(t, 'SEARCH_RESULT', cat(list(cat(filled(32, 1), str('x'), hex('0020000000000000'), u32(1))), bool(false)), 'u64 above 2^53 inside a list');
  t.end();
});

t.test('strings and u64 values at the encoder\'s fast-path edges encode as the specification says', (t) => {
  // The encoder measures and writes short ASCII strings in JS and falls back to Buffer's UTF-8 for the
  // rest; u64 is written as two u32 halves. Each value here sits on one side of an edge of those paths.
  const names = [
    '',
    'a',
    'x'.repeat(63),
    'x'.repeat(64),
    'x'.repeat(65),
    'x'.repeat(63) + 'é',
    'é' + 'x'.repeat(63),
    'x'.repeat(64) + 'é',
    '\u007f\u0080',
    'rapport-été.pdf',
    '日本語.txt',
    'emoji-😀.png',
    'lone-\ud800-surrogate',
    'x'.repeat(200),
    'é'.repeat(300),
  ];
  const sizes = [0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 40 + 12345, 2 ** 53 - 1];
  const files = names.map((name, i) => ({ id: filled(32, i + 1), name, size: sizes[i % sizes.length]!, peers: i }));
  const body = { files, truncated: true };
  const frameBytes = encodeFrame('SEARCH_RESULT', 3, body);
  t.same(frameBytes.subarray(10), referenceEncode(schemaOf('SEARCH_RESULT'), body), 'the body is byte for byte the reference encoding');
  const decoded = decodeBody('SEARCH_RESULT', frameBytes.subarray(10));
  t.same(decoded.files.map((f) => f.size), files.map((f) => f.size), 'every size decodes to itself');
  t.same(decoded.files.map((f) => f.name), names.map((n) => Buffer.from(n).toString()), 'every name decodes as UTF-8 gives it');
  t.end();
});

t.test('values that cannot be encoded throw P2P_BAD_REQUEST', (t) => {
  const badRequest = { code: 'P2P_BAD_REQUEST' };
  t.throws(() => encodeFrame('SEARCH', 1, { text: 'x'.repeat(65_536), limit: 1 }), badRequest, 'a str of 65536 bytes');
  t.throws(() => encodeFrame('SEARCH', 1, { text: 'é'.repeat(32_768), limit: 1 }), badRequest, 'a str of 32768 two-byte characters');
  t.doesNotThrow(() => encodeFrame('SEARCH', 1, { text: 'x'.repeat(65_535), limit: 1 }), 'a str of exactly 65535 bytes');
  const ok = decodeBody('SEARCH', encodeFrame('SEARCH', 1, { text: 'x'.repeat(65_535), limit: 1 }).subarray(10));
  t.equal(ok.text.length, 65_535, 'and it round-trips');
  t.throws(() => encodeFrame('TRACKER_CHANGED', 0, { primary: 'x', term: 2 ** 53 }), badRequest, 'a u64 of 2^53');
  t.throws(() => encodeFrame('TRACKER_CHANGED', 0, { primary: 'x', term: -1 }), badRequest, 'a negative u64');
  t.throws(() => encodeFrame('TRACKER_CHANGED', 0, { primary: 'x', term: 1.5 }), badRequest, 'a fractional u64');
  t.throws(() => encodeFrame('LOOKUP', 1, { id: filled(31, 1) }), badRequest, 'an id32 of 31 bytes');
  t.throws(() => encodeFrame('CHUNK', 1, { fileId: filled(32, 1), index: 0, hash: filled(32, 2), signature: filled(65, 1), data: Buffer.alloc(1) }), badRequest, 'a sig64 of 65 bytes');
  t.throws(() => encodeFrame('REGISTER', 1, { files: [{ id: filled(32, 1), size: 1, name: 'é'.repeat(40_000), complete: true }] }), badRequest, 'a str too long inside a list');
  t.end();
});

t.test('a schema can put rest only last', (t) => {
  t.throws(() => defineCodec({ data: 'rest', index: 'u32' }), /rest/, "'rest' before another field is a programming error");
  const codec = defineCodec({ index: 'u32', data: 'rest' });
  t.strictSame(codec.decode(cat(u32(9), hex('0102'))), { index: 9, data: hex('0102') }, 'rest takes every remaining byte');
  t.strictSame(codec.decode(u32(9)), { index: 9, data: Buffer.alloc(0) }, 'rest may be empty');
  t.end();
});
