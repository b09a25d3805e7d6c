import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import {
  ConnectionClosedError,
  P2PError,
  RemoteError,
  TimeoutError,
  VirtualClock,
  dial,
  encodeFrame,
  type Body,
  type IncomingRequest,
  type MessageName,
  type RequestHandler,
} from '../../protocol/index.js';
import { FrameBuffers, frameBuffers } from '../../protocol/frame-buffers.js';
import { cat, filled, frame, header, hex } from '../helpers/bytes.js';
import { countingListener, readUntilClosed, startServer, track, turn } from '../helpers/net.js';
import { until } from '../helpers/wait.js';

/** A handler that answers PING with PONG and passes anything else to `rest`. */
function pingOr(rest?: RequestHandler): RequestHandler {
  return (req, conn) => {
    if (req.name === 'PING') {
      conn.reply(req.requestId, 'PONG', {});
      return;
    }
    return rest?.(req, conn);
  };
}

/** Requests held by a handler until the test answers them. */
function holdRequests(): { handler: RequestHandler; held: IncomingRequest[]; arrived(n: number): Promise<void> } {
  const held: IncomingRequest[] = [];
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  return {
    held,
    handler: pingOr((req) => {
      held.push(req);
      for (const w of waiters.filter((w) => held.length >= w.n)) w.resolve();
    }),
    arrived: (n) => (held.length >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
  };
}

const searchResult = (name: string): Body<'SEARCH_RESULT'> => ({ files: [{ id: filled(32, name.charCodeAt(0)), name, size: name.length, peers: 1 }], truncated: false });

t.test('several requests in flight, answered out of order, each get their own answer', async (t) => {
  const hold = holdRequests();
  const server = await startServer(t, hold.handler);
  const client = await server.dial();
  const order: string[] = [];
  const asks = ['alpha', 'bravo', 'charlie', 'delta'].map((text) =>
    client.request('SEARCH', { text, limit: 10 }, 'SEARCH_RESULT').then((r) => {
      order.push(text);
      return r;
    }),
  );
  await hold.arrived(4);
  t.equal(new Set(hold.held.map((r) => r.requestId)).size, 4, 'each request has its own id');
  const conn = await server.accepted(1);
  for (const i of [2, 0, 3, 1]) {
    const req = hold.held[i] as IncomingRequest<'SEARCH'>;
    conn.reply(req.requestId, 'SEARCH_RESULT', searchResult(req.body.text));
  }
  const results = await Promise.all(asks);
  t.strictSame(
    results.map((r) => r.files[0]?.name),
    ['alpha', 'bravo', 'charlie', 'delta'],
    'every request resolved with the answer to it',
  );
  t.strictSame(order, ['charlie', 'alpha', 'delta', 'bravo'], 'in the order the answers came');
});

t.test('an ERROR answer rejects with a RemoteError carrying the code', async (t) => {
  const server = await startServer(
    t,
    pingOr(async (req) => {
      if (req.name === 'LOOKUP') throw new P2PError('P2P_NOT_FOUND', 'no file 0101...');
      if (req.name === 'SEARCH') throw new Error('database is gone');
      if (req.name === 'LEAVE') throw new P2PError('P2P_BLACKLISTED', 'peer is blacklisted');
    }),
  );
  const client = await server.dial();
  const notFound = await client.request('LOOKUP', { id: filled(32, 1) }, 'LOOKUP_RESULT').catch((e: unknown) => e);
  t.ok(notFound instanceof RemoteError, 'a RemoteError');
  t.equal((notFound as RemoteError).code, 'P2P_NOT_FOUND', 'with the code the server gave');
  t.equal((notFound as RemoteError).message, 'no file 0101...', 'and its message');
  await t.rejects(client.request('LEAVE', {}, 'OK'), { name: 'RemoteError', code: 'P2P_BLACKLISTED' });
  await t.rejects(client.request('SEARCH', { text: 'x', limit: 1 }, 'SEARCH_RESULT'), { name: 'RemoteError', code: 'P2P_INTERNAL' }, 'a handler bug is P2P_INTERNAL');
  t.strictSame(await client.request('PING', {}, 'PONG'), {}, 'the connection still works after errors');
});

t.test('a request that gets no answer times out with TimeoutError and is cancelled', async (t) => {
  const hold = holdRequests();
  const server = await startServer(t, hold.handler);
  const client = await server.dial();
  const conn = await server.accepted(1);
  const started = performance.now();
  const asked = client.request('GET_CHUNK', { fileId: filled(32, 1), index: 0 }, 'CHUNK', { timeoutMs: 40 });
  await hold.arrived(1);
  const cancelArrives = once(conn.socket, 'data');
  const err = await asked.catch((e: unknown) => e);
  t.ok(err instanceof TimeoutError, 'TimeoutError');
  t.equal((err as TimeoutError).code, 'P2P_TIMEOUT');
  t.match((err as Error).message, /GET_CHUNK.*40 ms/, 'the message names the request and the timeout');
  t.ok(performance.now() - started >= 35, 'not before the timeout');
  await cancelArrives;
  const req = hold.held[0]!;
  t.ok(conn.isCancelled(req.requestId), 'the server was told the request was withdrawn (CANCEL)');
  conn.reply(req.requestId, 'CHUNK', { fileId: filled(32, 1), index: 0, hash: filled(32, 2), signature: filled(64, 3), data: Buffer.alloc(0) });
  t.notOk(conn.isCancelled(req.requestId), 'answering forgets the cancellation');
  t.strictSame(await client.request('PING', {}, 'PONG'), {}, 'the late answer is dropped and the connection still works');
  t.notOk(client.isClosed);
});

t.test('an aborted request rejects at once and is cancelled on the server', async (t) => {
  const hold = holdRequests();
  const server = await startServer(t, hold.handler);
  const client = await server.dial();
  const conn = await server.accepted(1);
  const abort = new AbortController();
  const asked = client.request('LOOKUP', { id: filled(32, 1) }, 'LOOKUP_RESULT', { signal: abort.signal });
  await hold.arrived(1);
  const cancelArrives = once(conn.socket, 'data');
  abort.abort();
  await t.rejects(asked, { code: 'P2P_CONNECTION_CLOSED' });
  await cancelArrives;
  t.ok(conn.isCancelled(hold.held[0]!.requestId), 'the server saw the CANCEL');
});

t.test('more requests in flight than maxInFlight get P2P_TOO_MANY_REQUESTS', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const started: number[] = [];
  const server = await startServer(
    t,
    pingOr(async (req, conn) => {
      started.push(req.requestId);
      await gate;
      conn.reply(req.requestId, 'OK', {});
    }),
    { maxInFlight: 2 },
  );
  const client = await server.dial();
  const first = client.request('LEAVE', {}, 'OK');
  const second = client.request('LEAVE', {}, 'OK');
  const third = client.request('LEAVE', {}, 'OK');
  const err = await third.catch((e: unknown) => e);
  t.ok(err instanceof RemoteError, 'the third is refused');
  t.equal((err as RemoteError).code, 'P2P_TOO_MANY_REQUESTS');
  t.equal(started.length, 2, 'the handler only ever saw two');
  release();
  t.strictSame(await Promise.all([first, second]), [{}, {}], 'the first two are answered');
  t.strictSame(await client.request('LEAVE', {}, 'OK'), {}, 'once they are done, new requests are served again');
  t.notOk(client.isClosed, 'refusing a request does not close the connection');
});

t.test('bad bytes: an ERROR frame with our code, the connection closed, other connections unaffected', async (t) => {
  const server = await startServer(t, pingOr(), { maxBodyBytes: 64 * 1024 });
  const healthy = await server.dial();
  t.strictSame(await healthy.request('PING', {}, 'PONG'), {});

  const cases: Array<{ what: string; bytes: Buffer; code: string; answers?: number[] }> = [
    { what: 'garbage (an HTTP request)', bytes: Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), code: 'P2P_BAD_VERSION' },
    { what: 'a header declaring a 4 GiB body', bytes: header(0x43, 1, 0xffffffff), code: 'P2P_FRAME_TOO_LARGE' },
    { what: 'a header declaring one byte over the limit', bytes: header(0x43, 1, 64 * 1024 + 1), code: 'P2P_FRAME_TOO_LARGE' },
    { what: 'an unknown message type', bytes: header(0xee, 1, 0), code: 'P2P_UNKNOWN_MESSAGE' },
    // A malformed request is answered under its own id first, then the last word (request id 0).
    { what: 'a request whose body lies', bytes: frame(0x42, 9, hex('0102')), code: 'P2P_MALFORMED', answers: [9, 0] },
    { what: 'an answer nobody asked for', bytes: frame(0x04, 0, Buffer.alloc(0)), code: 'P2P_UNEXPECTED_MESSAGE' },
  ];
  for (const c of cases) {
    const serverSide = server.accepted(server.connections.length + 1);
    const raw = await server.raw();
    const rawOutcome = readUntilClosed(raw);
    raw.write(c.bytes);
    const conn = await serverSide;
    const [closeErr] = (await once(conn, 'close')) as [P2PError | undefined];
    const outcome = await rawOutcome;
    t.strictSame(
      outcome.errors.map((e) => [e.requestId, e.code]),
      (c.answers ?? [0]).map((id) => [id, c.code]),
      `${c.what}: ERROR ${c.code}, request id 0 last`,
    );
    t.equal(outcome.frames.length, outcome.errors.length, `${c.what}: nothing but ERROR frames`);
    t.ok(raw.closed, `${c.what}: the server closed the connection`);
    t.equal(closeErr?.code, c.code, `${c.what}: the server connection closed with ${c.code}`);
    t.strictSame(await healthy.request('PING', {}, 'PONG'), {}, `${c.what}: a healthy connection on the same server keeps working`);
  }
  t.equal(server.connections.filter((c) => !c.isClosed).length, 1, 'only the healthy connection is left');
});

t.test('read deadline: a frame started but not finished is closed with P2P_READ_TIMEOUT', async (t) => {
  const server = await startServer(t, pingOr(), { readTimeoutMs: 60 });
  const healthy = await server.dial();
  for (const [what, bytes] of [
    ['half a header', hex('01 03 0000')],
    ['a header and half its body', cat(header(0x42, 5, 36), filled(18, 1))],
  ] as const) {
    const raw = await server.raw();
    raw.write(bytes);
    const outcome = await readUntilClosed(raw);
    t.strictSame(outcome.errors.map((e) => [e.requestId, e.code]), [[0, 'P2P_READ_TIMEOUT']], `${what}: ERROR P2P_READ_TIMEOUT, then closed`);
  }
  t.strictSame(await healthy.request('PING', {}, 'PONG'), {}, 'a connection that sends whole frames is not affected');
});

t.test('read deadline: frames that finish in time are never cut off, even when reads straddle frames', async (t) => {
  // Each frame here completes 400 ms after its first byte, well within the 1000 ms deadline; but every
  // read ends in the middle of the next frame, so the framer never sits empty between reads. The deadline
  // belongs to the frame being read, and must start again with each frame.
  const clock = new VirtualClock();
  let served = 0;
  const server = await startServer(
    t,
    pingOr(() => void served++),
    { clock, readTimeoutMs: 1000 },
  );
  const raw = await server.raw();
  const conn = await server.accepted(1);
  const stream = cat(...Array.from({ length: 20 }, (_, i) => encodeFrame('LEAVE', i + 1, {})));
  // 15 bytes, then 10 at a time: frame n ends 5 bytes into read n, and read n starts frame n+1.
  const reads = [stream.subarray(0, 15)];
  for (let at = 15; at < stream.length; at += 10) reads.push(stream.subarray(at, at + 10));
  for (const piece of reads) {
    if (conn.isClosed) break;
    const arrived = once(conn.socket, 'data');
    raw.write(piece);
    await arrived;
    clock.advance(400);
  }
  t.notOk(conn.isClosed, `the connection is open after ${clock.now()} ms of steady traffic`);
  t.equal(served, 20, 'every frame was served');
});

t.test('idle timeout: no traffic for idleTimeoutMs closes the connection, traffic resets it', async (t) => {
  const clock = new VirtualClock();
  const server = await startServer(t, pingOr(), { clock, idleTimeoutMs: 1000 });
  const client = await server.dial();
  const conn = await server.accepted(1);
  clock.advance(900);
  t.strictSame(await client.request('PING', {}, 'PONG'), {}, 'alive after 900 ms');
  clock.advance(900);
  t.notOk(conn.isClosed, 'a request 900 ms in restarted the idle timer');
  const closed = once(client, 'close');
  clock.advance(100);
  const [err] = (await closed) as [P2PError | undefined];
  t.ok(conn.isClosed, "closed 1000 ms after the last frame (once that turn's reads found nothing new)");
  t.ok(err instanceof RemoteError, "the client learns why from the server's last word");
  t.equal(err?.code, 'P2P_IDLE_TIMEOUT');
  await t.rejects(client.request('PING', {}, 'PONG'), { code: 'P2P_IDLE_TIMEOUT' }, 'later requests fail with the reason');
});

t.test('idle timeout with the system clock', async (t) => {
  const server = await startServer(t, pingOr(), { idleTimeoutMs: 50 });
  const client = await server.dial();
  const [err] = (await once(client, 'close')) as [P2PError | undefined];
  t.equal(err?.code, 'P2P_IDLE_TIMEOUT', 'an idle client is told and disconnected');
});

t.test('replyInPlace sends the head it writes into the room before the data, and the data byte for byte', async (t) => {
  const ROOM = 256;
  const buf = Buffer.alloc(ROOM + 300_000, 0xee);
  const data = buf.subarray(ROOM);
  for (let i = 0; i < data.length; i++) data[i] = (i * 17 + (i >> 9)) & 0xff;
  const before = Buffer.from(data);
  let flushed = 0;
  const server = await startServer(
    t,
    pingOr((req, conn) => {
      const { fileId, index } = (req as IncomingRequest<'GET_CHUNK'>).body;
      const head = { fileId, index, hash: filled(32, 0x22), signature: filled(64, 0x33), data: Buffer.alloc(0) };
      t.throws(() => conn.replyInPlace(req.requestId, 'CHUNK', head, buf, 100, data.length), RangeError, 'a head that does not fit its room is refused, not written over the data');
      conn.replyInPlace(req.requestId, 'CHUNK', head, buf, ROOM, data.length, () => flushed++);
    }),
  );
  const client = await server.dial();
  const chunk = await client.request('GET_CHUNK', { fileId: filled(32, 9), index: 5 }, 'CHUNK', { timeoutMs: 5000 });
  t.equal(chunk.index, 5, 'the head fields arrive');
  t.ok(chunk.hash.equals(filled(32, 0x22)) && chunk.signature.equals(filled(64, 0x33)));
  t.ok(chunk.data.equals(before), 'data arrives byte for byte, untouched by the head');
  t.equal(flushed, 1, 'onFlushed ran once');
  t.strictSame(await client.request('PING', {}, 'PONG'), {}, 'the next frame on the connection is intact');
});

t.test('events under a request id reach that request’s onEvent; id 0 events are emitted', async (t) => {
  const server = await startServer(
    t,
    pingOr((req, conn) => {
      for (const n of [1, 2, 3]) conn.sendEvent('CONTROL_EVENT', { event: JSON.stringify({ n }) }, req.requestId);
      conn.reply(req.requestId, 'CONTROL_RESULT', { result: '"done"' });
    }),
  );
  const client = await server.dial();
  const seen: Array<[MessageName, unknown]> = [];
  const result = await client.request('CONTROL', { command: 'get', args: '{}' }, 'CONTROL_RESULT', { onEvent: (name, body) => seen.push([name, body]) });
  t.strictSame(result, { result: '"done"' });
  t.strictSame(
    seen,
    [1, 2, 3].map((n) => ['CONTROL_EVENT', { event: JSON.stringify({ n }) }]),
    'three progress events, in order, before the result',
  );
  const conn = await server.accepted(1);
  const pushed = once(client, 'event');
  conn.sendEvent('BLACKLIST_CHANGED', { added: [{ target: '10.0.0.66' }], removed: [] });
  t.strictSame(await pushed, ['BLACKLIST_CHANGED', { added: [{ target: '10.0.0.66' }], removed: [] }], "an unsolicited event is emitted as 'event'");
});

t.test('an answer that does not decode rejects its request instead of leaving it pending forever', async (t) => {
  for (const [what, answer] of [
    ['a PONG with a stray byte', frame(0x04, 1, hex('00'))],
    ['an ERROR whose body is cut short', frame(0x01, 1, hex('00'))],
  ] as const) {
    const server = net.createServer((sock) => sock.once('data', () => sock.write(answer)));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.teardown(() => server.close());
    const client = await dial({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port });
    t.teardown(() => client.destroy());
    const asked = track(client.request('PING', {}, 'PONG', { timeoutMs: 10_000 }));
    const [err] = (await once(client, 'close')) as [P2PError | undefined];
    t.equal(err?.code, 'P2P_MALFORMED', `${what}: the client closes the connection over it`);
    await turn();
    t.equal(asked.state, 'rejected', `${what}: the request settles, so its caller is not left waiting on a dead connection`);
    t.equal((asked.error as P2PError | undefined)?.code, 'P2P_MALFORMED', `${what}: with P2P_MALFORMED`);
  }
});

t.test('an answer of the wrong type rejects the request and closes the connection', async (t) => {
  const server = await startServer(t, (req, conn) => void conn.reply(req.requestId, 'OK', {}));
  const client = await server.dial();
  await t.rejects(client.request('PING', {}, 'PONG'), { code: 'P2P_UNEXPECTED_MESSAGE' });
  const [err] = (await once(client, 'close')) as [P2PError | undefined];
  t.equal(err?.code, 'P2P_UNEXPECTED_MESSAGE');
});

t.test('closing fails the requests in flight; a closed connection refuses new ones', async (t) => {
  const hold = holdRequests();
  const server = await startServer(t, hold.handler);
  const client = await server.dial();
  const asked = client.request('LOOKUP', { id: filled(32, 1) }, 'LOOKUP_RESULT');
  await hold.arrived(1);
  (await server.accepted(1)).close(new P2PError('P2P_SHUTTING_DOWN', 'tracker is shutting down'));
  await t.rejects(asked, { code: 'P2P_SHUTTING_DOWN', message: 'tracker is shutting down' }, 'the pending request learns why');
  await t.rejects(client.request('PING', {}, 'PONG'), { code: 'P2P_SHUTTING_DOWN' });

  const other = await server.dial();
  const pending = other.request('LOOKUP', { id: filled(32, 2) }, 'LOOKUP_RESULT');
  await hold.arrived(2);
  other.close();
  const err = await pending.catch((e: unknown) => e);
  t.ok(err instanceof ConnectionClosedError, 'closing our own end rejects with ConnectionClosedError');
  t.equal((err as P2PError).code, 'P2P_CONNECTION_CLOSED');
});

t.test('pipelined large requests with large answers all complete (no mutual backpressure deadlock)', async (t) => {
  // Both ends stop reading while their own writes are queued. If a client's queued requests stop it
  // reading answers, while the server's queued answers stop it reading requests, nothing ever moves.
  const big = 'x'.repeat(1 << 20);
  const server = await startServer(t, pingOr((req, conn) => void conn.reply(req.requestId, 'CONTROL_RESULT', { result: big })));
  const client = await server.dial();
  const results = await Promise.allSettled(
    Array.from({ length: 16 }, () => client.request('CONTROL', { command: 'echo', args: big }, 'CONTROL_RESULT', { timeoutMs: 4000 })),
  );
  const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
  t.equal(failed.length, 0, `all 16 answered (failed: ${failed.map((f) => (f.reason as P2PError).code).join(',') || 'none'})`);
});

t.test('large answers written into reused memory each arrive as they were written, under backpressure', async (t) => {
  // Answers of 64 KB and more are encoded into buffers the connection takes back once the socket is done
  // with them. The small requests arrive together and are answered in one go, so most answers (660 KB
  // each, all different) wait in the socket's queue: a buffer reused while a queued answer still pointed
  // into it would show as another answer's bytes.
  const answerTo = (args: string): string => `${args.slice(0, 10)}:`.repeat(60_000);
  const server = await startServer(t, pingOr((req, conn) => void conn.reply(req.requestId, 'CONTROL_RESULT', { result: answerTo((req.body as { args: string }).args) })));
  const client = await server.dial();
  const asks = Array.from({ length: 24 }, (_, i) => `answer-${String(i).padStart(3, '0')}`);
  const results = await Promise.all(asks.map((args) => client.request('CONTROL', { command: 'echo', args }, 'CONTROL_RESULT', { timeoutMs: 8000 })));
  const intact = results.filter((r, i) => r.result === answerTo(asks[i]!)).length;
  t.equal(intact, asks.length, 'every answer is its own, byte for byte');
  t.ok(frameBuffers.retainedBytes > 0, 'the memory of the answers went back to the pool');
  const again = await client.request('CONTROL', { command: 'echo', args: 'once-more!' }, 'CONTROL_RESULT');
  t.equal(again.result, answerTo('once-more!'), 'and an answer written into reused memory is intact too');
});

t.test('the frame pool hands out sizes by power of two and keeps no more than its cap', (t) => {
  const pool = new FrameBuffers(3 * 1024 * 1024);
  t.equal(pool.take(1000), undefined, 'a small frame is not pooled');
  t.equal(pool.take(64 * 1024 * 1024), undefined, 'nor a huge one');
  const a = pool.take(100_000)!;
  t.equal(a.length, 128 * 1024, '100,000 bytes come from the 128 KiB class');
  pool.give(a);
  t.equal(pool.take(70_000), a, 'and the same memory serves the next frame of that class');
  const big = [pool.take(2_000_000)!, pool.take(2_000_000)!];
  pool.give(big[0]!);
  pool.give(big[1]!);
  t.equal(pool.retainedBytes, 2 * 1024 * 1024, 'past the cap a buffer given back is let go');
  t.end();
});

t.test('a request nobody serves is refused with P2P_UNEXPECTED_MESSAGE, not dropped', async (t) => {
  const server = await startServer(t, undefined);
  const client = await server.dial();
  await t.rejects(client.request('PING', {}, 'PONG'), { name: 'RemoteError', code: 'P2P_UNEXPECTED_MESSAGE' });
  t.notOk(client.isClosed, 'and the connection stays open');
});

t.test('dial with a signal aborted already gives up at once with P2P_CONNECT_FAILED, and no connection is made', async (t) => {
  // A download cancelled before a holder is dialled: this used to throw a ReferenceError from inside the
  // dial and leave its socket connecting with no error handler (a refused port then crashed the process).
  const { port, dialled } = await countingListener(t);
  const gone = new AbortController();
  gone.abort();
  await t.rejects(dial({ host: '127.0.0.1', port }, { signal: gone.signal, connectTimeoutMs: 1000 }), { code: 'P2P_CONNECT_FAILED', message: `gave up connecting to 127.0.0.1:${port}` });
  // A dial made after it reaches the server: the aborted one never did.
  const after = await dial({ host: '127.0.0.1', port }, { connectTimeoutMs: 1000 });
  after.destroy();
  await until('the later dial to be accepted', () => dialled() >= 1);
  t.equal(dialled(), 1, 'only the later dial was accepted');
});
