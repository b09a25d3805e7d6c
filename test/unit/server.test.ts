/**
 * protocol/server.ts on real sockets (127.0.0.x, port 0): the connection limits in total and per address,
 * the handshake deadline on the virtual clock, and the server side of the peer handshake, each seen the way
 * a client meets it: the ERROR frame with its code, and a closed connection.
 */
import { once } from 'node:events';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import t from 'tap';
import {
  authPayload,
  ConnectionLimiter,
  decodeBody,
  encodeFrame,
  Framer,
  generateKeyPair,
  P2PError,
  peerIdOf,
  Role,
  serverProofPayload,
  signPayload,
  VirtualClock,
  verifyPayload,
  type Body,
  type Clock,
  type ConnectionLimits,
  type Frame,
  type IncomingRequest,
  type KeyPair,
  type MessageName,
} from '../../protocol/index.js';
import type { Tap } from '../helpers/roundtrip.js';
import { until } from '../helpers/wait.js';

const LONG = 60_000;

interface LimitedServer {
  port: number;
  limiter: ConnectionLimiter;
}

/**
 * A server that accepts through a ConnectionLimiter and speaks the peer handshake: PING before it, and
 * SEARCH (answered with an empty result) only after it.
 */
async function limitedServer(t: Tap, limits: ConnectionLimits, options: { clock?: Clock; keys?: KeyPair; addressKey?: (host: string) => string } = {}): Promise<LimitedServer> {
  const limiter = new ConnectionLimiter({
    limits,
    connection: options.clock ? { clock: options.clock } : {},
    ...(options.addressKey ? { addressKey: options.addressKey } : {}),
  });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const accepted = limiter.accept(socket);
    if (!accepted) return;
    const { conn, handshake } = accepted;
    conn.onRequest((req) => {
      switch (req.name) {
        case 'PING':
          conn.reply(req.requestId, 'PONG', {});
          return;
        case 'HELLO':
          handshake.acceptHello();
          handshake.challengePeer(req as IncomingRequest<'HELLO'>, { keys: options.keys, badKeyMessage: 'peers only, with a 32-byte key' });
          return;
        case 'AUTH': {
          const peerId = handshake.verifyPeerAuth(req as IncomingRequest<'AUTH'>);
          if (!peerId) return;
          handshake.markReady();
          conn.reply(req.requestId, 'WELCOME', { peerId, observedHost: conn.remoteAddress, observedPort: conn.remotePort, leaseMs: 0, role: 'peer', term: 0, primary: '' });
          return;
        }
      }
      handshake.requireReady(req);
      conn.reply(req.requestId, 'SEARCH_RESULT', { files: [], truncated: false });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as net.AddressInfo).port, limiter };
}

/** A raw client bound to a chosen loopback address (any 127.x.y.z reaches a server on 127.0.0.1 on Linux). */
class Client {
  readonly frames: Frame[] = [];
  private readonly framer = new Framer();
  private nextId = 1;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.framer.push(chunk, (f) => this.frames.push({ ...f, body: Buffer.from(f.body) })));
    socket.on('error', () => undefined); // a reset is an outcome we look at, not a crash
  }

  static async connect(t: Tap, port: number, from = '127.0.0.1'): Promise<Client> {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: from });
    t.teardown(() => socket.destroy());
    await once(socket, 'connect');
    return new Client(socket);
  }

  request<N extends MessageName>(name: N, body: Body<N>): number {
    const id = this.nextId++;
    this.socket.write(encodeFrame(name, id, body));
    return id;
  }

  /** The answer to request `id`: its name, and its code and message if it is an ERROR. */
  async answer(id: number): Promise<{ name: MessageName; body: Buffer; code?: string; message?: string }> {
    const f = await until(`an answer to request ${id}`, () => this.frames.find((x) => x.requestId === id) ?? (this.socket.closed ? null : undefined), 5000, 5);
    if (!f) throw new Error(`closed without answering request ${id} (last words: ${JSON.stringify(this.lastWords)})`);
    return f.name === 'ERROR' ? { name: f.name, body: f.body, ...decodeBody('ERROR', f.body) } : { name: f.name, body: f.body };
  }

  /** True when the server answers PING: the connection was accepted and is served. */
  async served(): Promise<boolean> {
    return (await this.answer(this.request('PING', {}))).name === 'PONG';
  }

  /** ERROR frames with request id 0: a server's last words before it closes. */
  get lastWords(): Array<{ code: string; message: string }> {
    return this.frames.filter((f) => f.name === 'ERROR' && f.requestId === 0).map((f) => decodeBody('ERROR', f.body));
  }

  /** Waits until the server has closed the connection; returns its last words. */
  async closedBy(): Promise<Array<{ code: string; message: string }>> {
    await until('the server to close the connection', () => this.socket.closed, 5000, 5);
    return this.lastWords;
  }

  /** HELLO with `keys`' public key, then AUTH signed by `signer` (by default the same keys). */
  async handshake(keys: KeyPair, signer = keys): Promise<{ name: MessageName; body: Buffer; code?: string; message?: string }> {
    const hello = await this.answer(this.request('HELLO', { role: Role.peer, publicKey: keys.publicKey, nonce: randomBytes(32), listenPort: 0, software: 'server-test' }));
    if (hello.name !== 'CHALLENGE') throw new Error(`HELLO answered with ${hello.name} ${hello.code ?? ''}`);
    const challenge = decodeBody('CHALLENGE', hello.body);
    return this.answer(this.request('AUTH', { signature: signPayload(signer, authPayload(challenge.nonce)) }));
  }
}

const newKeys = (): KeyPair => generateKeyPair().keys;

t.test('per-address limit: one connection too many from an address is refused and closed; a close frees its slot', async (t) => {
  const { port, limiter } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 2, handshakeTimeoutMs: LONG });
  const first = await Client.connect(t, port);
  const second = await Client.connect(t, port);
  t.ok((await first.served()) && (await second.served()), 'two connections from 127.0.0.1 are served');
  t.equal(limiter.size, 2);

  const third = await Client.connect(t, port);
  t.same(await third.closedBy(), [{ code: 'P2P_TOO_MANY_CONNECTIONS', message: 'too many connections (limit 10 in total, 2 per address)' }], 'the third from 127.0.0.1 is told why and closed');
  t.equal(limiter.size, 2, 'a refused connection takes no slot');

  const other = await Client.connect(t, port, '127.0.0.2');
  t.ok(await other.served(), 'another address has its own count');
  t.ok(await first.served(), 'the connections already open notice nothing');

  first.socket.destroy();
  await until('the closed connection to leave the count', () => limiter.size === 2, 5000, 5);
  const again = await Client.connect(t, port);
  t.ok(await again.served(), 'once one closes, 127.0.0.1 may connect again');
});

t.test('total limit: one connection too many is refused whatever its address; a close frees its slot', async (t) => {
  const { port, limiter } = await limitedServer(t, { maxConnections: 2, maxConnectionsPerIp: 10, handshakeTimeoutMs: LONG });
  const a = await Client.connect(t, port, '127.0.0.1');
  const b = await Client.connect(t, port, '127.0.0.2');
  t.ok((await a.served()) && (await b.served()), 'two connections are served');
  const c = await Client.connect(t, port, '127.0.0.3');
  t.same((await c.closedBy()).map((w) => w.code), ['P2P_TOO_MANY_CONNECTIONS'], 'a third, from a new address, is refused');
  b.socket.destroy();
  await until('the closed connection to leave the count', () => limiter.size === 1, 5000, 5);
  const d = await Client.connect(t, port, '127.0.0.3');
  t.ok(await d.served(), 'after a close there is room again');
});

t.test('the address key decides what counts as one address, and the refusal text can be the server\'s own', async (t) => {
  const limiter = new ConnectionLimiter({
    limits: { maxConnections: 10, maxConnectionsPerIp: 1, handshakeTimeoutMs: LONG },
    connection: {},
    addressKey: () => 'one subnet',
    tooManyMessage: 'this peer has too many connections',
  });
  const server = net.createServer((socket) => limiter.accept(socket)?.conn.onRequest((req, conn) => void conn.reply(req.requestId, 'PONG', {})));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as net.AddressInfo).port;
  const a = await Client.connect(t, port, '127.0.0.1');
  t.ok(await a.served());
  const b = await Client.connect(t, port, '127.0.0.2');
  t.same(await b.closedBy(), [{ code: 'P2P_TOO_MANY_CONNECTIONS', message: 'this peer has too many connections' }], 'two addresses with one key share one count');
  a.socket.destroy();
});

t.test('refuseAll: a server shutting down refuses new connections with its reason', async (t) => {
  const { port, limiter } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: LONG });
  const before = await Client.connect(t, port);
  t.ok(await before.served());
  limiter.refuseAll(new P2PError('P2P_SHUTTING_DOWN', 'test server is shutting down'));
  const after = await Client.connect(t, port);
  t.same(await after.closedBy(), [{ code: 'P2P_SHUTTING_DOWN', message: 'test server is shutting down' }]);
  t.equal(limiter.size, 1, 'the refused connection was never counted');
});

t.test('handshake deadline: a silent client, or one that stops after HELLO, is told and closed; a finished handshake is not', async (t) => {
  const clock = new VirtualClock();
  const { port, limiter } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: 1000 }, { clock });
  const silent = await Client.connect(t, port);
  const halfway = await Client.connect(t, port);
  const honest = await Client.connect(t, port);
  t.equal((await halfway.answer(halfway.request('HELLO', { role: Role.peer, publicKey: newKeys().publicKey, nonce: randomBytes(32), listenPort: 0, software: 'x' }))).name, 'CHALLENGE');
  t.equal((await honest.handshake(newKeys())).name, 'WELCOME', 'the honest client finishes its handshake');
  t.ok(await silent.served(), 'the silent client is accepted (PING is allowed before the handshake)');
  t.equal(limiter.size, 3);

  clock.advance(999);
  t.ok(await silent.served(), 'one millisecond before the deadline it is still open');
  clock.advance(1);
  const deadline = [{ code: 'P2P_HANDSHAKE_TIMEOUT', message: 'no handshake within 1000 ms' }];
  t.same(await silent.closedBy(), deadline, 'at the deadline a client that sent nothing is told and closed');
  t.same(await halfway.closedBy(), deadline, 'and so is one that said HELLO and never AUTH');
  await until('the timed-out connections to leave the count', () => limiter.size === 1, 5000, 5);

  clock.advance(10 * 1000);
  t.equal((await honest.answer(honest.request('SEARCH', { text: 'x', limit: 1 }))).name, 'SEARCH_RESULT', 'a client that finished in time is served long after the deadline');
});

t.test('peer handshake: the key of HELLO must sign the nonce of CHALLENGE; a bad AUTH is refused and closed', async (t) => {
  const serverKeys = newKeys();
  const { port, limiter } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: LONG }, { keys: serverKeys });
  const alice = newKeys();

  const honest = await Client.connect(t, port);
  const clientNonce = randomBytes(32);
  const hello = await honest.answer(honest.request('HELLO', { role: Role.peer, publicKey: alice.publicKey, nonce: clientNonce, listenPort: 0, software: 'x' }));
  const challenge = decodeBody('CHALLENGE', hello.body);
  t.ok(challenge.publicKey.equals(serverKeys.publicKey), "a serving peer's CHALLENGE carries its key");
  t.ok(verifyPayload(serverKeys.publicKey, serverProofPayload(clientNonce), challenge.signature), 'and its signature over the client nonce');
  const welcome = await honest.answer(honest.request('AUTH', { signature: signPayload(alice, authPayload(challenge.nonce)) }));
  t.equal(welcome.name, 'WELCOME');
  t.equal(decodeBody('WELCOME', welcome.body).peerId, peerIdOf(alice.publicKey), 'the peer id is the one of the key HELLO presented');

  const mallory = await Client.connect(t, port);
  const refused = await mallory.handshake(alice, newKeys());
  t.same({ code: refused.code, message: refused.message }, { code: 'P2P_BAD_SIGNATURE', message: 'the handshake signature does not match the public key' }, "an AUTH signed by another key than HELLO's is refused");
  t.same((await mallory.closedBy()).map((w) => w.code), ['P2P_BAD_SIGNATURE'], 'and the connection is closed saying why');

  const replay = await Client.connect(t, port);
  const replayHello = await replay.answer(replay.request('HELLO', { role: Role.peer, publicKey: alice.publicKey, nonce: randomBytes(32), listenPort: 0, software: 'x' }));
  t.not(decodeBody('CHALLENGE', replayHello.body).nonce.toString('hex'), challenge.nonce.toString('hex'), 'every connection is challenged with a fresh nonce');
  const replayed = await replay.answer(replay.request('AUTH', { signature: signPayload(alice, authPayload(challenge.nonce)) }));
  t.equal(replayed.code, 'P2P_BAD_SIGNATURE', "a signature over another connection's nonce does not verify");
  t.same((await replay.closedBy()).map((w) => w.code), ['P2P_BAD_SIGNATURE']);

  await until('the refused connections to leave the count', () => limiter.size === 1, 5000, 5);
  t.equal((await honest.answer(honest.request('SEARCH', { text: 'x', limit: 1 }))).name, 'SEARCH_RESULT', 'the honest session notices nothing');
});

t.test('peer handshake: the order of messages is enforced', async (t) => {
  const { port } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: LONG });
  const c = await Client.connect(t, port);
  const early = await c.answer(c.request('SEARCH', { text: 'x', limit: 1 }));
  t.same([early.code, early.message], ['P2P_NOT_AUTHENTICATED', 'SEARCH before the handshake completed'], 'no request before the handshake');
  t.equal((await c.answer(c.request('AUTH', { signature: Buffer.alloc(64) }))).message, 'AUTH without HELLO');
  const badKey = await c.answer(c.request('HELLO', { role: Role.peer, publicKey: Buffer.alloc(31), nonce: randomBytes(32), listenPort: 0, software: 'x' }));
  t.same([badKey.code, badKey.message], ['P2P_BAD_REQUEST', 'peers only, with a 32-byte key'], "a key that is not 32 bytes gets the server's own message");
  const notPeer = await c.answer(c.request('HELLO', { role: Role.admin, publicKey: Buffer.alloc(32), nonce: randomBytes(32), listenPort: 0, software: 'x' }));
  t.equal(notPeer.code, 'P2P_BAD_REQUEST', 'the peer handshake is for peers only');
  const keys = newKeys();
  const hello = await c.answer(c.request('HELLO', { role: Role.peer, publicKey: keys.publicKey, nonce: randomBytes(32), listenPort: 0, software: 'x' }));
  const challenge = decodeBody('CHALLENGE', hello.body);
  t.same([challenge.publicKey.length, challenge.signature.length], [0, 0], 'a server without keys (a tracker) proves nothing in CHALLENGE');
  const twice = await c.answer(c.request('HELLO', { role: Role.peer, publicKey: keys.publicKey, nonce: randomBytes(32), listenPort: 0, software: 'x' }));
  t.same([twice.code, twice.message], ['P2P_UNEXPECTED_MESSAGE', 'HELLO twice']);
  t.equal((await c.answer(c.request('AUTH', { signature: signPayload(keys, authPayload(challenge.nonce)) }))).name, 'WELCOME', 'the first challenge still stands');
  t.ok(await c.served());
});
