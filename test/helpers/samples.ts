/**
 * Hand-built frames: each expected byte string is written from the specification with literal type codes
 * and plain Buffer writes (test/helpers/bytes.ts), never with protocol/. If the catalogue or the codec
 * drifts from the specification, these disagree.
 */
import { bool, bytes, cat, filled, frame, hex, list, str, text, u16, u32, u64, u8 } from './bytes.js';
import type { Sample } from './roundtrip.js';

const fileA = filled(32, 0x11);
const fileB = filled(32, 0x12);
const hashA = filled(32, 0x22);
const sigA = filled(64, 0x33);
const keyA = filled(32, 0xaa);
const keyB = filled(32, 0xcc);
const peerA = 'a1'.repeat(20);
const peerB = 'b2'.repeat(20);
const TB = 2 ** 40;

export const handBuiltSamples: Sample[] = [
  // --- common ---------------------------------------------------------------------------------------
  { name: 'OK', requestId: 7, body: {}, frame: hex('01 02 00000007 00000000') },
  { name: 'PING', requestId: 1, body: {}, frame: hex('01 03 00000001 00000000') },
  { name: 'PONG', requestId: 0xfffffffe, body: {}, frame: hex('01 04 fffffffe 00000000'), title: 'PONG with the largest request id' },
  { name: 'CANCEL', requestId: 0, body: { requestId: 0x01020304 }, frame: hex('01 05 00000000 00000004 01020304') },
  {
    name: 'ERROR',
    requestId: 0,
    body: { code: 'P2P_EXISTS', message: '' },
    // 'P2P_EXISTS' is 10 ASCII bytes; the body is 2 + 10 + 2 = 14 bytes.
    frame: hex('01 01 00000000 0000000e 000a 5032505f455849535453 0000'),
    title: 'ERROR as a last word (request id 0, empty message)',
  },
  {
    name: 'ERROR',
    requestId: 3,
    body: { code: 'P2P_NOT_FOUND', message: 'no such file: naïve.txt' },
    frame: frame(0x01, 3, cat(str('P2P_NOT_FOUND'), str('no such file: naïve.txt'))),
  },

  // --- handshake -------------------------------------------------------------------------------------
  {
    name: 'HELLO',
    requestId: 1,
    body: { role: 1, listenPort: 7070, software: 'p2pshare/0.1.0', link: Buffer.alloc(0) },
    frame: frame(0x10, 1, cat(u8(1), u16(7070), str('p2pshare/0.1.0'), hex('00000000'))),
  },
  {
    name: 'HELLO',
    requestId: 1,
    body: { role: 2, listenPort: 7071, software: 'p2p-tracker', link: hex('0102') },
    frame: frame(0x10, 1, cat(u8(2), u16(7071), str('p2p-tracker'), hex('00000002 0102'))),
    title: 'HELLO of a tracker link: rank 1 dials rank 2',
  },
  {
    name: 'WELCOME',
    requestId: 2,
    body: { peerId: peerA, observedHost: '127.0.0.1', observedPort: 54321, leaseMs: 30_000, role: 'primary', term: 3, primary: '127.0.0.1:7070', proof: Buffer.alloc(0) },
    frame: frame(0x13, 2, cat(str(peerA), str('127.0.0.1'), hex('d431'), hex('00007530'), str('primary'), hex('0000000000000003'), str('127.0.0.1:7070'), hex('00000000'))),
  },
  {
    name: 'WELCOME',
    requestId: 2,
    body: { peerId: '', observedHost: '::1', observedPort: 0, leaseMs: 0, role: 'backup', term: 4, primary: '', proof: sigA.subarray(0, 32) },
    frame: frame(0x13, 2, cat(str(''), str('::1'), hex('0000'), hex('00000000'), str('backup'), hex('0000000000000004'), str(''), hex('00000020'), sigA.subarray(0, 32))),
    title: "WELCOME to an admin, with the tracker's proof of the token",
  },

  // --- peer -> tracker ---------------------------------------------------------------------------------
  {
    name: 'REGISTER',
    requestId: 9,
    body: {
      files: [
        { id: fileA, size: 1_048_577, name: 'naïve.txt', complete: true },
        { id: fileB, size: TB, name: 'b.iso', complete: false },
      ],
    },
    frame: frame(
      0x20,
      9,
      list(
        // 'naïve.txt' is 10 bytes of UTF-8 (ï is two).
        cat(fileA, hex('0000000000100001'), hex('000a'), Buffer.from('naïve.txt'), hex('01')),
        cat(fileB, hex('0000010000000000'), str('b.iso'), bool(false)),
      ),
    ),
    title: 'REGISTER with two files',
  },
  { name: 'REGISTER', requestId: 10, body: { files: [] }, frame: hex('01 20 0000000a 00000004 00000000'), title: 'REGISTER with an empty list' },
  {
    name: 'UNREGISTER',
    requestId: 11,
    body: { all: false, ids: [{ id: fileA }, { id: fileB }] },
    frame: frame(0x21, 11, cat(bool(false), list(fileA, fileB))),
  },
  { name: 'SEARCH', requestId: 12, body: { text: 'iso', limit: 100 }, frame: hex('01 22 0000000c 00000009 0003 69736f 00000064') },
  {
    name: 'SEARCH_RESULT',
    requestId: 12,
    body: { files: [{ id: fileB, name: 'b.iso', size: TB, peers: 3 }], truncated: true },
    frame: frame(0x23, 12, cat(list(cat(fileB, str('b.iso'), u64(TB), u32(3))), bool(true))),
  },
  { name: 'LOOKUP', requestId: 13, body: { id: fileA }, frame: frame(0x24, 13, fileA) },
  {
    name: 'LOOKUP_RESULT',
    requestId: 13,
    body: {
      size: 1_048_577,
      peers: [
        { peerId: peerA, publicKey: keyA, host: '10.0.0.5', port: 7071, complete: true },
        { peerId: peerB, publicKey: keyB, host: '::1', port: 7072, complete: false },
      ],
    },
    frame: frame(
      0x25,
      13,
      cat(
        u64(1_048_577),
        list(cat(str(peerA), keyA, str('10.0.0.5'), u16(7071), bool(true)), cat(str(peerB), keyB, str('::1'), u16(7072), bool(false))),
      ),
    ),
  },
  {
    name: 'BLACKLIST_CHANGED',
    requestId: 0,
    body: { added: [{ target: peerB }, { target: '10.0.0.66' }], removed: [] },
    frame: frame(0x28, 0, cat(list(str(peerB), str('10.0.0.66')), list())),
  },
  {
    name: 'REPORT',
    requestId: 14,
    body: {
      fileId: fileA,
      reason: 'bad bytes',
      evidence: 1,
      manifest: Buffer.from('P2PM'),
      receipts: [{ publicKey: keyB, index: 4, hash: hashA, signature: sigA }],
    },
    frame: frame(0x29, 14, cat(fileA, str('bad bytes'), u8(1), bytes(Buffer.from('P2PM')), list(cat(keyB, u32(4), hashA, sigA)))),
  },
  { name: 'TRACKER_CHANGED', requestId: 0, body: { primary: '10.0.0.6:7070', term: 4 }, frame: frame(0x2c, 0, cat(str('10.0.0.6:7070'), u64(4))) },

  // --- peer -> peer --------------------------------------------------------------------------------------
  {
    name: 'GET_CHUNK',
    requestId: 42,
    body: { fileId: fileA, index: 5 },
    frame: hex(`01 42 0000002a 00000024 ${'11'.repeat(32)} 00000005`),
  },
  {
    name: 'CHUNK',
    requestId: 42,
    body: { fileId: fileA, index: 5, hash: hashA, signature: sigA, data: Buffer.from('hello chunk') },
    frame: frame(0x43, 42, cat(fileA, u32(5), hashA, sigA, Buffer.from('hello chunk'))),
  },
  {
    name: 'HAVE',
    requestId: 43,
    body: { complete: false, bits: Buffer.from([0b1010_0000]) },
    frame: hex('01 45 0000002b 00000006 00 00000001 a0'),
  },

  // --- admin ---------------------------------------------------------------------------------------------
  {
    name: 'ADMIN_BLACKLIST',
    requestId: 50,
    body: { entries: [{ target: '10.0.0.66', reason: 'sent bad data', since: 1_700_000_000_000, addedBy: 'admin' }] },
    frame: frame(0x53, 50, list(cat(str('10.0.0.66'), str('sent bad data'), hex('0000018bcfe56800'), str('admin')))),
  },
  {
    name: 'ADMIN_BLACKLIST_ADD',
    requestId: 51,
    body: { token: 's3cret', target: peerB, reason: '' },
    frame: frame(0x54, 51, cat(str('s3cret'), str(peerB), str(''))),
  },

  // --- tracker <-> tracker ---------------------------------------------------------------------------------
  {
    name: 'RAFT',
    requestId: 0,
    body: { message: '{"t":"vote","term":4,"last":{"index":17,"term":2,"epoch":9},"pre":true,"transfer":false}' },
    frame: frame(0x60, 0, text('{"t":"vote","term":4,"last":{"index":17,"term":2,"epoch":9},"pre":true,"transfer":false}')),
    title: 'RAFT, an event between trackers',
  },

  // --- control socket ----------------------------------------------------------------------------------------
  {
    name: 'CONTROL',
    requestId: 70,
    body: { command: 'get', args: '{"name":"b.iso","out":"/tmp/ü"}' },
    frame: frame(0x70, 70, cat(str('get'), text('{"name":"b.iso","out":"/tmp/ü"}'))),
  },
  { name: 'CONTROL_EVENT', requestId: 70, body: { event: '{"bytes":1024}' }, frame: frame(0x72, 70, text('{"bytes":1024}')) },
  { name: 'CONTROL_RESULT', requestId: 70, body: { result: '' }, frame: hex('01 71 00000046 00000004 00000000') },
];
