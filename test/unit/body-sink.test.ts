/**
 * Chunk bodies read straight into the downloader's buffers: the framer's user-buffer mode (reads land
 * where the framer says, a large body exactly in its sink) must hand out the same frames as the classic
 * path for any way the bytes arrive, and a sink given back early must never be written again.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { Framer, HEADER_BYTES, VirtualClock, encodeFrame, encodeFrameHead, type Body, type Frame, type FrameHeader } from '../../protocol/index.js';
import { ChunkPool } from '../../peerd/chunk-pool.js';
import { startServer, track, turn } from '../helpers/net.js';
import { cat } from '../helpers/bytes.js';
import { framesFrom, oneBytePieces } from '../helpers/roundtrip.js';

const view = (f: Frame): string => `${f.name}#${f.requestId}:${f.body.toString('hex')}`;

function chunkFrame(requestId: number, data: Buffer): Buffer {
  const head: Body<'CHUNK'> = { fileId: Buffer.alloc(32, 1), index: 7, hash: Buffer.alloc(32, 2), signature: Buffer.alloc(64, 3), data: Buffer.alloc(0) };
  return cat(encodeFrameHead('CHUNK', requestId, head, data.length), data);
}

/**
 * Feeds `stream` through a framer in user-buffer mode, each read at most `readSizes[i]` bytes (cycled) and
 * never more than the framer's read buffer, as a socket with `onread` does.
 */
function readThrough(stream: Buffer, readSizes: number[], sink?: (h: FrameHeader) => Buffer | undefined): { frames: string[]; sunk: number } {
  const framer = new Framer(undefined, sink);
  const frames: string[] = [];
  let sunk = 0;
  let at = 0;
  let i = 0;
  while (at < stream.length) {
    const dst = framer.readBuffer();
    const n = Math.min(dst.length, readSizes[i++ % readSizes.length]!, stream.length - at);
    stream.copy(dst, 0, at, at + n);
    at += n;
    framer.commitRead(n, (f) => {
      if (f.body.length >= 16 * 1024) sunk++;
      frames.push(view(f));
    });
  }
  return { frames, sunk };
}

t.test('user-buffer mode gives the same frames as the classic path, however the reads fall', (t) => {
  const big = randomBytes(40_000);
  const stream = cat(encodeFrame('PING', 1, {}), chunkFrame(2, big), encodeFrame('PONG', 3, {}), chunkFrame(4, randomBytes(20_000)), encodeFrame('PING', 5, {}));
  const want = framesFrom([stream]).map(view);
  t.equal(want.length, 5);
  for (const sizes of [[1], [7], [10], [11], [1000], [65536], [3, 5000, 17], [1 << 20]]) {
    for (const withSink of [false, true]) {
      const pool = new ChunkPool(64 * 1024, 4);
      const sink = (h: FrameHeader): Buffer | undefined => (h.name === 'CHUNK' ? pool.acquire(h.bodyBytes) : undefined);
      const got = readThrough(stream, sizes, withSink ? sink : undefined);
      t.strictSame(got.frames, want, `reads of ${sizes.join('/')} bytes${withSink ? ', chunks into the pool' : ''}`);
      // A frame that arrives whole in one read is simply copied out; a longer one goes to the pool.
      if (withSink && Math.max(...sizes) < 20_000) t.equal(pool.inUse, 2, 'both chunks went to the pool');
    }
  }
  t.end();
});

t.test('a chunk body is read in place: the frame body is the sink buffer itself, never copied', (t) => {
  const data = randomBytes(100_000);
  const frame = chunkFrame(9, data);
  const target = Buffer.alloc(200_000);
  let asked: FrameHeader | undefined;
  const framer = new Framer(undefined, (h) => {
    asked = h;
    return target;
  });
  const frames: Frame[] = [];
  let at = 0;
  let reads = 0;
  while (at < frame.length) {
    const dst = framer.readBuffer();
    const n = Math.min(dst.length, 30_000, frame.length - at);
    frame.copy(dst, 0, at, at + n);
    at += n;
    reads++;
    framer.commitRead(n, (f) => frames.push(f));
  }
  t.equal(asked?.name, 'CHUNK', 'the sink saw the header');
  t.equal(asked?.requestId, 9);
  t.equal(asked?.bodyBytes, frame.length - HEADER_BYTES);
  t.equal(frames.length, 1);
  t.equal(frames[0]!.body.buffer, target.buffer, 'the body is a view of the sink buffer');
  t.equal(frames[0]!.body.byteOffset, target.byteOffset);
  t.ok(frames[0]!.body.subarray(132).equals(data), 'with the data in place');
  t.ok(reads <= Math.ceil(frame.length / 30_000) + 1, 'no read was split to copy');
  t.end();
});

t.test('every split of a stream with a sunk chunk gives the same frames (classic pushes too)', (t) => {
  const stream = cat(encodeFrame('PING', 1, {}), chunkFrame(2, randomBytes(17_000)), encodeFrame('PONG', 3, {}));
  const want = framesFrom([stream]).map(view);
  let bad = 0;
  for (let at = 1; at < stream.length; at += 13) {
    const framer = new Framer(undefined, (h) => Buffer.alloc(h.bodyBytes));
    const got: string[] = [];
    framer.push(stream.subarray(0, at), (f) => got.push(view(f)));
    framer.push(stream.subarray(at), (f) => got.push(view(f)));
    if (JSON.stringify(got) !== JSON.stringify(want)) bad++;
  }
  t.equal(bad, 0, 'classic pushes split anywhere');
  const framer = new Framer(undefined, (h) => Buffer.alloc(h.bodyBytes));
  const got: string[] = [];
  for (const piece of oneBytePieces(stream)) framer.push(piece, (f) => got.push(view(f)));
  t.strictSame(got, want, 'one byte at a time');
  t.end();
});

t.test('a withdrawn sink is never written again: the rest of its body is dropped, the next frame is whole', (t) => {
  const target = Buffer.alloc(50_000, 0xee);
  const framer = new Framer(undefined, () => target);
  const stream = cat(chunkFrame(5, randomBytes(40_000)), encodeFrame('PONG', 6, {}));
  const frames: Frame[] = [];
  let at = 0;
  const read = (max: number): void => {
    const dst = framer.readBuffer();
    const n = Math.min(dst.length, max, stream.length - at);
    stream.copy(dst, 0, at, at + n);
    at += n;
    framer.commitRead(n, (f) => frames.push(f));
  };
  read(10_000);
  t.equal(framer.sinkRequestId, 5, 'the body is being read into the sink');
  t.equal(framer.withdrawSink(4), false, 'another request id is not withdrawn');
  t.equal(framer.withdrawSink(5), true);
  const snapshot = Buffer.from(target);
  while (at < stream.length) read(7_000);
  t.ok(target.equals(snapshot), 'no byte landed in the withdrawn buffer');
  t.strictSame(frames.map((f) => f.name), ['PONG'], 'the chunk was dropped, the PONG came through');
  t.equal(framer.pendingBytes, 0);
  t.end();
});

t.test('a sink that is too small or declines leaves the frame to the framer', (t) => {
  const stream = chunkFrame(1, randomBytes(30_000));
  const want = framesFrom([stream]).map(view);
  t.strictSame(readThrough(stream, [4096], () => Buffer.alloc(100)).frames, want, 'too small');
  t.strictSame(readThrough(stream, [4096], () => undefined).frames, want, 'declined');
  t.end();
});

t.test('over a real socket: request({ into }) puts the chunk in a pool buffer the caller gives back', async (t) => {
  const ROOM = 256;
  const frame = Buffer.alloc(ROOM + (1 << 20));
  const data = frame.subarray(ROOM);
  randomBytes(data.length).copy(data);
  const server = await startServer(t, (req, conn) => {
    if (req.name !== 'GET_CHUNK') return;
    const head: Body<'CHUNK'> = { fileId: Buffer.alloc(32, 1), index: 0, hash: Buffer.alloc(32, 2), signature: Buffer.alloc(64, 3), data: Buffer.alloc(0) };
    conn.replyInPlace(req.requestId, 'CHUNK', head, frame, ROOM, data.length);
  });
  const client = await server.dial();
  const pool = new ChunkPool((1 << 20) + 256, 2);
  for (let round = 0; round < 3; round++) {
    const chunk = await client.request('GET_CHUNK', { fileId: Buffer.alloc(32, 1), index: 0 }, 'CHUNK', { into: pool });
    t.ok(chunk.data.equals(data), `round ${round}: the data arrived whole`);
    t.equal(pool.inUse, 1, 'the caller holds the buffer');
    pool.release(chunk.data);
    t.equal(pool.inUse, 0);
  }
  t.equal(pool.size, 1, 'one buffer served every round');
});

t.test('over a real socket: a request that times out mid-body gives its buffer back only once no read can land in it', async (t) => {
  let rest: (() => void) | undefined;
  const server = await startServer(t, (req, conn) => {
    if (req.name === 'PING') {
      conn.reply(req.requestId, 'PONG', {});
      return;
    }
    if (req.name !== 'GET_CHUNK') return;
    const head: Body<'CHUNK'> = { fileId: Buffer.alloc(32, 1), index: 0, hash: Buffer.alloc(32, 2), signature: Buffer.alloc(64, 3), data: Buffer.alloc(0) };
    const data = Buffer.alloc(1 << 20, 0x5a);
    const frame = cat(encodeFrameHead('CHUNK', req.requestId, head, data.length), data);
    // A third of the frame now, the rest when the test says.
    conn.socket.write(frame.subarray(0, 300_000));
    rest = () => conn.socket.write(frame.subarray(300_000));
  });
  const clock = new VirtualClock();
  const client = await server.dial({ clock });
  // Remembers each buffer's bytes when it comes back: nothing may write to it after that.
  const returned: Array<{ buf: Buffer; bytes: Buffer }> = [];
  const pool = new ChunkPool((1 << 20) + 256, 2);
  const spy = {
    acquire: (n: number) => pool.acquire(n),
    release: (b: Buffer) => {
      const whole = Buffer.from(b.buffer, 0, b.buffer.byteLength);
      returned.push({ buf: whole, bytes: Buffer.from(whole) });
      pool.release(b);
    },
  };
  const pending = track(client.request('GET_CHUNK', { fileId: Buffer.alloc(32, 1), index: 0 }, 'CHUNK', { into: spy, timeoutMs: 5000 }));
  while (pool.inUse === 0 || rest === undefined) await turn();
  clock.advance(5000);
  await turn();
  t.equal(pending.state, 'rejected', 'the request timed out');
  rest();
  t.strictSame(await client.request('PING', {}, 'PONG'), {}, 'the connection goes on after the dropped body');
  t.equal(pool.inUse, 0, 'the buffer is back in the pool');
  t.equal(returned.length, 1);
  t.ok(returned[0]!.buf.equals(returned[0]!.bytes), 'no byte was written to it after it came back');
});

t.test('over a real socket: a connection that closes mid-body gives the buffer back', async (t) => {
  const server = await startServer(t, (req, conn) => {
    if (req.name !== 'GET_CHUNK') return;
    const head: Body<'CHUNK'> = { fileId: Buffer.alloc(32, 1), index: 0, hash: Buffer.alloc(32, 2), signature: Buffer.alloc(64, 3), data: Buffer.alloc(0) };
    conn.socket.write(encodeFrameHead('CHUNK', req.requestId, head, 1 << 20));
    conn.socket.write(Buffer.alloc(100_000), () => conn.socket.destroy());
  });
  const client = await server.dial();
  const pool = new ChunkPool((1 << 20) + 256, 2);
  const err = await client.request('GET_CHUNK', { fileId: Buffer.alloc(32, 1), index: 0 }, 'CHUNK', { into: pool }).catch((e: unknown) => e as Error);
  t.match(err, { code: 'P2P_CONNECTION_CLOSED' });
  t.equal(pool.inUse, 0, 'the buffer is back');
});

t.test('claims: no more buffers promised than the pool holds, each given back once, waiters woken', (t) => {
  const pool = new ChunkPool(1024, 3);
  const a = pool.claim()!;
  const b = pool.claim()!;
  const c = pool.claim()!;
  t.ok(a && b && c, 'three claims on a pool of three');
  t.equal(pool.claim(), undefined, 'a fourth is refused');
  t.equal(pool.acquire(10), undefined, 'and so is a buffer without a claim');
  let woken = 0;
  pool.whenFree(() => woken++);
  const bufA = a.acquire(1000)!;
  t.equal(bufA.length, 1024, 'a claim acquires its buffer');
  t.equal(a.acquire(1000), undefined, 'only once');
  t.equal(pool.claimed, 2);
  t.equal(pool.inUse, 1);
  a.cancel(); // after acquiring: nothing to give back
  t.equal(pool.claimed, 2, 'cancelling a used claim changes nothing');
  t.equal(woken, 0);
  b.cancel();
  b.cancel();
  t.equal(pool.claimed, 1, 'a cancelled claim is given back once');
  t.equal(woken, 1, 'whoever waited is woken when a claim comes back');
  t.ok(pool.claim(), 'and the freed place can be claimed again');
  pool.whenFree(() => woken++);
  a.release(bufA.subarray(5, 9));
  t.equal(pool.inUse, 0, 'a view gives its buffer back');
  t.equal(woken, 2, 'and wakes the next waiter');
  t.equal(c.acquire(2000), undefined, 'a body larger than the buffers is not taken');
  t.equal(pool.claimed, 1, 'but uses up its claim');
  t.equal(pool.size, 1, 'buffers are made only when acquired, and reused');
  t.end();
});
