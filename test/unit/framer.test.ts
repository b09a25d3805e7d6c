import fc from 'fast-check';
import t from 'tap';
import {
  BadVersionError,
  VersionError,
  DEFAULT_MAX_BODY_BYTES,
  FrameTooLargeError,
  Framer,
  HEADER_BYTES,
  MAX_REPORT_RECEIPTS,
  Messages,
  ProtocolError,
  UnknownMessageError,
  encodeFrame,
  encodeFrameHead,
  type Frame,
} from '../../protocol/index.js';
import { cat, filled, frame, header, hex, str, u32, u8 } from '../helpers/bytes.js';
import { framesFrom, oneBytePieces, sampleTitle, splitAt } from '../helpers/roundtrip.js';
import { handBuiltSamples } from '../helpers/samples.js';

const view = (f: Frame): string => `${f.name}#${f.requestId}:${f.body.toString('hex')}`;
const expected = (frames: readonly Buffer[]): string[] => frames.flatMap((b) => framesFrom([b]).map(view));

t.test('the header is 10 bytes: version, type, request id, body length', (t) => {
  t.equal(HEADER_BYTES, 10);
  const f = framesFrom([hex('01 42 0a0b0c0d 00000024'), filled(32, 1), u32(3)]);
  t.equal(f.length, 1);
  t.equal(f[0]?.name, 'GET_CHUNK', 'type 0x42');
  t.equal(f[0]?.requestId, 0x0a0b0c0d, 'request id big-endian');
  t.equal(f[0]?.body.length, 36, 'body length big-endian');
  t.equal(framesFrom([hex('01 03 ffffffff 00000000')])[0]?.requestId, 0xffffffff, 'a request id above 2^31 stays positive');
  t.end();
});

t.test('every sample frame split at every byte offset gives the same frame', (t) => {
  for (const s of handBuiltSamples) {
    const want = expected([s.frame]);
    let same = true;
    for (let at = 1; at < s.frame.length; at++) {
      const got = framesFrom(splitAt(s.frame, [at])).map(view);
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        same = false;
        t.strictSame(got, want, `${sampleTitle(s)} split at ${at}`);
        break;
      }
    }
    t.ok(same, `${sampleTitle(s)}: identical at all ${s.frame.length - 1} split points`);
    t.strictSame(framesFrom(oneBytePieces(s.frame)).map(view), want, `${sampleTitle(s)}: identical in 1-byte pieces`);
  }
  t.end();
});

t.test('a stream of every sample, split at every offset and in 1-byte pieces', (t) => {
  const frames = handBuiltSamples.map((s) => s.frame);
  const stream = cat(...frames);
  const want = expected(frames);
  t.equal(want.length, frames.length);
  t.strictSame(framesFrom([stream]).map(view), want, 'in one push');
  t.strictSame(framesFrom(oneBytePieces(stream)).map(view), want, 'one byte at a time');
  let mismatches = 0;
  for (let at = 1; at < stream.length; at++) {
    const got = framesFrom(splitAt(stream, [at])).map(view);
    if (JSON.stringify(got) !== JSON.stringify(want)) mismatches++;
  }
  t.equal(mismatches, 0, `identical at all ${stream.length - 1} split points`);
  t.end();
});

t.test('random splits of a random stream of frames (property)', (t) => {
  const frames = handBuiltSamples.map((s) => s.frame);
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom(...frames), { minLength: 1, maxLength: 12 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      (chosen, cuts) => {
        const stream = cat(...chosen);
        const offsets = [...new Set(cuts.map((c) => 1 + (c % stream.length)))].filter((o) => o < stream.length).sort((a, b) => a - b);
        return JSON.stringify(framesFrom(splitAt(stream, offsets)).map(view)) === JSON.stringify(expected(chosen));
      },
    ),
    { numRuns: 300 },
  );
  t.pass('frames out are the frames in, however the stream is cut');
  t.end();
});

t.test('pendingBytes tells whether a frame is half received', (t) => {
  const framer = new Framer();
  const ping = hex('01 03 00000001 00000000');
  const frames: Frame[] = [];
  framer.push(ping.subarray(0, 4), (f) => frames.push(f));
  t.equal(framer.pendingBytes, 4, 'half a header is pending');
  framer.push(ping.subarray(4), (f) => frames.push(f));
  t.equal(framer.pendingBytes, 0, 'nothing pending after a whole frame');
  t.equal(frames.length, 1);
  framer.push(cat(ping, ping.subarray(0, 3)), (f) => frames.push(f));
  t.equal(framer.pendingBytes, 3, 'the start of the next frame is pending');
  t.equal(frames.length, 2);
  t.end();
});

t.test('limits are enforced from the header alone', (t) => {
  const max = 1024;
  const pushHeader = (head: Buffer, framer = new Framer(max)): unknown => {
    try {
      framer.push(head, () => t.fail('no frame may come out'));
    } catch (err) {
      return err;
    }
    return undefined;
  };

  t.test('a declared body over the limit throws FrameTooLargeError before any body byte', (t) => {
    const err = pushHeader(header(0x02, 1, max + 1));
    t.ok(err instanceof FrameTooLargeError, 'FrameTooLargeError');
    t.ok(err instanceof ProtocolError, 'a ProtocolError');
    t.equal((err as FrameTooLargeError).code, 'P2P_FRAME_TOO_LARGE');
    t.match((err as Error).message, /1025.*1024/, 'the message gives the declared size and the limit');
    t.ok(pushHeader(header(0x43, 1, 0xffffffff)) instanceof FrameTooLargeError, 'a declared 4 GiB body');
    t.equal(pushHeader(header(0x43, 1, max)), undefined, 'a body of exactly the limit is accepted (and awaited)');
    t.end();
  });

  t.test('the default limit is 8 MiB', (t) => {
    t.equal(DEFAULT_MAX_BODY_BYTES, 8 * 1024 * 1024);
    t.ok(pushHeader(header(0x43, 1, DEFAULT_MAX_BODY_BYTES + 1), new Framer()) instanceof FrameTooLargeError, 'one byte over');
    t.equal(pushHeader(header(0x43, 1, DEFAULT_MAX_BODY_BYTES), new Framer()), undefined, 'exactly 8 MiB waits for the body');
    t.end();
  });

  t.test('a version this release does not speak throws VersionError; a first byte no release writes, BadVersionError', (t) => {
    for (const version of [2, 3, 31]) {
      const err = pushHeader(header(0x03, 1, 0, version));
      t.ok(err instanceof VersionError, `version ${version}: another release's frame`);
      t.equal((err as VersionError).code, 'P2P_VERSION');
      t.match((err as VersionError).message, new RegExp(`version ${version} is not spoken here \\(this release speaks version 1\\): upgrade the older of the two`), 'and it names both versions');
    }
    for (const version of [0, 0x47, 0xff]) {
      const err = pushHeader(header(0x03, 1, 0, version));
      t.ok(err instanceof BadVersionError, `version ${version}: not a p2pshare frame`);
      t.equal((err as BadVersionError).code, 'P2P_BAD_VERSION');
    }
    t.ok(pushHeader(Buffer.from('GET / HTTP/1.1\r\n\r\n')) instanceof BadVersionError, 'an HTTP request is refused by version');
    t.end();
  });

  t.test('an unknown message type throws UnknownMessageError', (t) => {
    const known = new Set(Object.values(Messages).map((m) => m.code));
    let checked = 0;
    for (let type = 0; type <= 0xff; type++) {
      if (known.has(type)) continue;
      const err = pushHeader(header(type, 1, 0));
      if (!(err instanceof UnknownMessageError) || err.code !== 'P2P_UNKNOWN_MESSAGE') t.fail(`type 0x${type.toString(16)} was not refused`);
      checked++;
    }
    t.equal(checked, 256 - known.size, 'every unused type code is refused');
    t.end();
  });

  t.test('a bad header after good frames is still caught', (t) => {
    const framer = new Framer(max);
    const got: Frame[] = [];
    t.throws(() => framer.push(cat(hex('01 03 00000001 00000000'), header(0x02, 2, max + 1)), (f) => got.push(f)), { code: 'P2P_FRAME_TOO_LARGE' });
    t.equal(got.length, 1, 'the good frame before it was delivered');
    t.end();
  });
  t.end();
});

t.test("a capped list over its maximum is refused as soon as its count arrives, before the body (issue 10)", (t) => {
  const receipt = filled(164, 7);
  // REPORT: file id, reason, evidence, an empty manifest, then the receipt count.
  const head = (n: number): Buffer => cat(filled(32, 1), str('flood'), u8(0), u32(0), u32(n));
  const over = MAX_REPORT_RECEIPTS + 1;
  const bodyBytes = head(over).length + over * receipt.length;
  const prefix = cat(header(Messages.REPORT.code, 9, bodyBytes), head(over));
  for (let at = 1; at < prefix.length; at++) {
    // Every way the first bytes can arrive: nothing is refused before the count is whole.
    const framer = new Framer();
    let thrown: unknown;
    try {
      for (const piece of splitAt(prefix, [at])) framer.push(piece, () => t.fail('no frame may come out'));
    } catch (err) {
      thrown = err;
    }
    if ((thrown as { code?: string } | undefined)?.code !== 'P2P_TOO_MANY_RECEIPTS') {
      t.fail(`split at ${at}: ${String(thrown)}`);
      return t.end();
    }
  }
  t.pass(`a REPORT announcing ${over} receipts is refused on its first ${prefix.length} bytes however they arrive, of ${bodyBytes + 10}`);
  const framer = new Framer();
  t.doesNotThrow(() => framer.push(prefix.subarray(0, prefix.length - 1), () => undefined), 'not before its count is whole');
  const ok = cat(header(Messages.REPORT.code, 9, head(MAX_REPORT_RECEIPTS).length + MAX_REPORT_RECEIPTS * receipt.length), head(MAX_REPORT_RECEIPTS));
  const fine = new Framer();
  fine.push(ok, () => t.fail('the body is not there yet'));
  t.ok(fine.pendingBytes > 0, `a REPORT announcing ${MAX_REPORT_RECEIPTS} is awaited`);
  t.end();
});

t.test('bodies handed out are never overwritten by later pushes', (t) => {
  // Consumers keep bodies (a chunk on its way to disk) without copying; the framer must never reuse
  // the bytes behind a body it has handed out.
  const frameA = encodeFrame('CHUNK', 1, { fileId: filled(32, 0xa1), index: 1, hash: filled(32, 0xa2), signature: filled(64, 0xa3), data: filled(3000, 0xaa) });
  const frameB = (i: number): Buffer => encodeFrame('CHUNK', 2 + i, { fileId: filled(32, i), index: i, hash: filled(32, i), signature: filled(64, i), data: filled(2000 + i, i) });
  const kept: Array<{ body: Buffer; copy: Buffer }> = [];
  const keep = (f: Frame): void => void kept.push({ body: f.body, copy: Buffer.from(f.body) });

  t.test('a frame assembled from pieces (the framer owns the buffer)', (t) => {
    const framer = new Framer();
    for (const piece of splitAt(frameA, [7, 100, 2000])) framer.push(piece, keep);
    const a = kept[kept.length - 1]!;
    // The following frames arrive in odd pieces so that they land in whatever free space the framer has.
    const rest = cat(...Array.from({ length: 20 }, (_, i) => frameB(i)));
    for (let at = 0; at < rest.length; at += 777) framer.push(rest.subarray(at, at + 777), keep);
    t.equal(kept.length, 21, 'all frames out');
    t.ok(a.body.equals(a.copy), "frame A's body is unchanged");
    t.ok(kept.every((k) => k.body.equals(k.copy)), 'every body handed out is unchanged');
    t.end();
  });

  t.test('a frame that arrives whole with the start of the next one', (t) => {
    kept.length = 0;
    const framer = new Framer();
    const stream = cat(frameA, frameB(1), frameB(2));
    framer.push(stream.subarray(0, frameA.length + 50), keep);
    const a = kept[0]!;
    framer.push(stream.subarray(frameA.length + 50, frameA.length + 60), keep);
    framer.push(stream.subarray(frameA.length + 60), keep);
    t.equal(kept.length, 3);
    t.ok(a.body.equals(a.copy), "frame A's body is unchanged");
    t.ok(kept.every((k) => k.body.equals(k.copy)), 'every body handed out is unchanged');
    t.end();
  });

  t.test('any frames, any cuts (property)', (t) => {
    const pool = [frameA, frameB(1), frameB(7), ...handBuiltSamples.map((s) => s.frame)];
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...pool), { minLength: 2, maxLength: 10 }), fc.array(fc.nat(), { maxLength: 30 }), (chosen, cuts) => {
        const stream = cat(...chosen);
        const offsets = [...new Set(cuts.map((c) => 1 + (c % stream.length)))].filter((o) => o < stream.length).sort((a, b) => a - b);
        const framer = new Framer();
        const out: Array<{ body: Buffer; copy: Buffer }> = [];
        for (const piece of splitAt(stream, offsets)) framer.push(piece, (f) => out.push({ body: f.body, copy: Buffer.from(f.body) }));
        return out.length === chosen.length && out.every((k) => k.body.equals(k.copy));
      }),
      { numRuns: 300 },
    );
    t.pass('no body changed after it was handed out');
    t.end();
  });
  t.end();
});

t.test('encodeFrameHead leaves room for a tail written separately', (t) => {
  const data = filled(1500, 0x5c);
  const head = { fileId: filled(32, 1), index: 2, hash: filled(32, 3), signature: filled(64, 4) };
  const headBuf = encodeFrameHead('CHUNK', 77, { ...head, data: Buffer.alloc(0) }, data.length);
  t.equal(headBuf.length, HEADER_BYTES + 32 + 4 + 32 + 64, 'header and fixed fields only');
  t.equal(headBuf.readUInt32BE(6), 32 + 4 + 32 + 64 + data.length, 'the header declares the tail too');
  t.equal(cat(headBuf, data).toString('hex'), encodeFrame('CHUNK', 77, { ...head, data }).toString('hex'), 'head + tail is the whole frame');
  t.strictSame(
    framesFrom([headBuf, data]).map(view),
    [`CHUNK#77:${cat(head.fileId, u32(2), head.hash, head.signature, data).toString('hex')}`],
    'a framer reads it as one frame',
  );
  t.end();
});

t.test('frames are built with the header the specification describes', (t) => {
  const f = encodeFrame('LOOKUP', 0xdeadbeef, { id: filled(32, 9) });
  t.equal(f.toString('hex'), frame(0x24, 0xdeadbeef, filled(32, 9)).toString('hex'));
  t.end();
});
