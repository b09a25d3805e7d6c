/**
 * protocol/server.ts on real sockets (127.0.0.x, port 0), in TLS as every server runs: the connection
 * limits in total and per address, the handshake deadline on the virtual clock (TLS's own handshake
 * included), and the server side of the peer handshake, each seen the way a client meets it: the ERROR
 * frame with its code, and a closed connection.
 */
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import {
  clientOptions,
  CLUSTER_ALPN,
  ConnectionLimiter,
  decodeBody,
  dial,
  encodeFrame,
  Framer,
  generateKeyPair,
  offersAlpn,
  P2PError,
  peerIdOf,
  remoteKey,
  Role,
  serverContext,
  VirtualClock,
  type Body,
  type Clock,
  type ConnectionLimits,
  type Frame,
  type IncomingRequest,
  type KeyPair,
  type MessageName,
} from '../../protocol/index.js';
import type { Tap } from '../helpers/tap.js';
import { TcpProxy } from '../helpers/relay.js';
import { identityOf } from '../helpers/tls.js';
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
    tls: serverContext(identityOf(options.keys ?? serverKeys)),
  });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    limiter.accept(socket, ({ conn, handshake }) => {
      conn.onRequest((req) => {
        switch (req.name) {
          case 'PING':
            conn.reply(req.requestId, 'PONG', {});
            return;
          case 'HELLO': {
            handshake.acceptHello();
            const peerId = handshake.peerId(req as IncomingRequest<'HELLO'>, 'peers only, with the certificate of their key');
            handshake.markReady();
            conn.reply(req.requestId, 'WELCOME', { peerId, observedHost: conn.remoteAddress, observedPort: conn.remotePort, leaseMs: 0, role: 'peer', term: 0, primary: '', proof: Buffer.alloc(0) });
            return;
          }
        }
        handshake.requireReady(req);
        conn.reply(req.requestId, 'SEARCH_RESULT', { files: [], truncated: false });
      });
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

const serverKeys = generateKeyPair().keys;

/**
 * A raw client in TLS, bound to a chosen loopback address (any 127.x.y.z reaches a server on 127.0.0.1 on
 * Linux), presenting the certificate of `keys` (null: none, like an admin).
 */
class Client {
  readonly frames: Frame[] = [];
  private readonly framer = new Framer();
  private nextId = 1;

  private constructor(readonly socket: tls.TLSSocket) {
    socket.on('data', (chunk: Buffer) => this.framer.push(chunk, (f) => this.frames.push({ ...f, body: Buffer.from(f.body) })));
    socket.on('error', () => undefined); // a reset is an outcome we look at, not a crash
  }

  static async connect(t: Tap, port: number, from = '127.0.0.1', keys: KeyPair | null = generateKeyPair().keys, alpn?: string[]): Promise<Client> {
    const options = clientOptions({ identity: keys ? identityOf(keys) : undefined, verify: () => undefined, alpn }, '127.0.0.1');
    const raw = net.connect({ port, host: '127.0.0.1', localAddress: from });
    t.teardown(() => raw.destroy());
    await once(raw, 'connect');
    const socket = tls.connect({ ...options, socket: raw });
    t.teardown(() => socket.destroy());
    await once(socket, 'secureConnect');
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

  /** HELLO as a peer: answered with WELCOME (or an ERROR). */
  handshake(role: number = Role.peer): Promise<{ name: MessageName; body: Buffer; code?: string; message?: string }> {
    return this.answer(this.request('HELLO', { role, listenPort: 0, software: 'server-test', link: Buffer.alloc(0) }));
  }
}

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
    tls: serverContext(identityOf(serverKeys)),
  });
  const server = net.createServer((socket) => limiter.accept(socket, ({ conn }) => conn.onRequest((req, c) => void c.reply(req.requestId, 'PONG', {}))));
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

t.test('handshake deadline: a silent client, one that never starts TLS, or one that stops before HELLO, is closed; a finished handshake is not', async (t) => {
  const clock = new VirtualClock();
  const { port, limiter } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: 1000 }, { clock });
  const silent = await Client.connect(t, port);
  const honest = await Client.connect(t, port);
  const plain = net.connect({ port, host: '127.0.0.1' });
  plain.on('error', () => undefined);
  t.teardown(() => plain.destroy());
  await once(plain, 'connect');
  t.equal((await honest.handshake()).name, 'WELCOME', 'the honest client finishes its handshake');
  t.ok(await silent.served(), 'the silent client is accepted (PING is allowed before the handshake)');
  await until('the plain client to be counted', () => limiter.size === 3, 5000, 5);

  clock.advance(999);
  t.ok(await silent.served(), 'one millisecond before the deadline it is still open');
  clock.advance(1);
  t.same(await silent.closedBy(), [{ code: 'P2P_HANDSHAKE_TIMEOUT', message: 'no handshake within 1000 ms' }], 'at the deadline a client that sent no HELLO is told and closed');
  if (!plain.closed) await once(plain, 'close');
  t.pass('and one that never started TLS is closed too');
  await until('the timed-out connections to leave the count', () => limiter.size === 1, 5000, 5);

  clock.advance(10 * 1000);
  t.equal((await honest.answer(honest.request('SEARCH', { text: 'x', limit: 1 }))).name, 'SEARCH_RESULT', 'a client that finished in time is served long after the deadline');
});

/**
 * A client that starts a TLS record and says no more: its handshake holds a turn (maxTlsHandshakes) until
 * its deadline. It reads, so that the server closing it is seen.
 */
async function stallingClient(t: Tap, port: number): Promise<net.Socket> {
  const s = net.connect({ port, host: '127.0.0.1' });
  s.on('error', () => undefined);
  t.teardown(() => s.destroy());
  await once(s, 'connect');
  s.write(Buffer.from([0x16, 0x03, 0x01]));
  s.resume();
  return s;
}

t.test('TLS handshakes in turn: past maxTlsHandshakes a client waits unread and is served when a turn frees; one that waited out its deadline is closed', async (t) => {
  const clock = new VirtualClock();
  const { port, limiter } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: 1000, maxTlsHandshakes: 1 }, { clock });
  const stall = (): Promise<net.Socket> => stallingClient(t, port);
  const stalled = await stall();
  let waited = false;
  const waiting = Client.connect(t, port).finally(() => (waited = true));
  // What must not happen has no event to wait for: a moment in which the waiting handshake does not finish.
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.notOk(waited, 'a second TLS client waits while the one turn is taken');
  t.same(limiter.tlsQueue, { waiting: 1, running: 1 }, 'the queue says so (the tracker serves it as p2p_tracker_tls_handshakes)');
  stalled.destroy();
  t.ok(await (await waiting).served(), 'and is served once the stalled client goes');
  t.same(limiter.tlsQueue, { waiting: 0, running: 0 }, 'and is empty then');

  const again = await stall();
  const late = Client.connect(t, port).then(
    () => 'connected',
    () => 'closed',
  );
  await new Promise((resolve) => setTimeout(resolve, 100));
  clock.advance(1000);
  t.equal(await late, 'closed', 'a client still waiting at its handshake deadline is closed without a turn');
  t.ok(again.closed || (await once(again, 'close')), 'as is the one that held the turn, at its own deadline');
});

t.test('with tlsQueueWaitMs a client waits for its turn past the handshake deadline, and no longer than tlsQueueWaitMs', async (t) => {
  const clock = new VirtualClock();
  const { port } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: 1000, maxTlsHandshakes: 1, tlsQueueWaitMs: 2500 }, { clock });
  const stall = (): Promise<net.Socket> => stallingClient(t, port);
  // What must not happen has no event to wait for: a moment in which it does not.
  const pause = (): Promise<unknown> => new Promise((resolve) => setTimeout(resolve, 200));
  const stalled = await stall();
  let settled = false;
  const waiting = Client.connect(t, port).finally(() => (settled = true));
  await pause();
  t.notOk(settled, 'the second client waits for the turn');
  // At 1000 the stalled client's time runs out and the waiting one, accepted as long ago, gets the turn
  // (before, it had waited out its own handshake deadline too, and was closed without one).
  clock.advance(1500);
  await once(stalled, 'close');
  t.ok(await (await waiting).served(), 'the one that waited 1.5 s, past the 1 s handshake deadline, is served');

  // Three clients that hold the turn a second each, and one behind them, which may wait 2.5 s for it.
  const holders = [await stall(), await stall(), await stall()];
  let lateSettled = false;
  const late = Client.connect(t, port).then(
    () => 'connected',
    () => 'closed',
  ).finally(() => (lateSettled = true));
  await pause();
  // Each turn passes on when the server has closed its holder: wait for that before the clock moves on.
  clock.advance(1000);
  await once(holders[0]!, 'close');
  await pause();
  clock.advance(1000);
  await once(holders[1]!, 'close');
  await pause();
  t.notOk(lateSettled, 'after 2 s, twice the handshake deadline, the last client still waits');
  clock.advance(1000);
  t.equal(await late, 'closed', 'when the turn frees at 3 s it is closed without one: it waited its 2.5 s');
});

t.test("a cluster link's handshake (priorityAlpn offered) does not wait behind the queue of peers' handshakes", async (t) => {
  const { port } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: LONG, maxTlsHandshakes: 1, priorityAlpn: CLUSTER_ALPN });
  const stalled = net.connect({ port, host: '127.0.0.1' });
  stalled.on('error', () => undefined);
  t.teardown(() => stalled.destroy());
  await once(stalled, 'connect');
  stalled.write(Buffer.from([0x16, 0x03, 0x01])); // holds the one turn
  let peerServed = false;
  const peer = Client.connect(t, port).then(async (c) => (peerServed = await c.served()));
  const link = await Client.connect(t, port, '127.0.0.1', generateKeyPair().keys, [CLUSTER_ALPN]);
  t.ok(await link.served(), 'the cluster link is served while the turn is taken');
  t.notOk(peerServed, 'while a peer still waits for it');
  const other = Client.connect(t, port, '127.0.0.1', generateKeyPair().keys, ['h2']).then((c) => c.served());
  stalled.destroy();
  t.ok(await peer, 'the peer is served once the turn frees');
  t.ok(await other, 'as is a client that offered another ALPN protocol, in its turn');
});

t.test('only clients from priorityFrom may claim the cluster lane; others wait in the queue like peers', async (t) => {
  const { port } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: LONG, maxTlsHandshakes: 1, priorityAlpn: CLUSTER_ALPN, priorityFrom: new Set(['10.9.9.9']) });
  /** Holds the one handshake turn of the server on `p`. */
  const holdTurn = async (p: number): Promise<net.Socket> => {
    const s = net.connect({ port: p, host: '127.0.0.1' });
    s.on('error', () => undefined);
    t.teardown(() => s.destroy());
    await once(s, 'connect');
    s.write(Buffer.from([0x16, 0x03, 0x01]));
    return s;
  };
  const stalled = await holdTurn(port);
  let served = false;
  const claimant = Client.connect(t, port, '127.0.0.1', generateKeyPair().keys, [CLUSTER_ALPN]).then(async (c) => (served = await c.served()));
  // The same claim to a server that lists this address, its turn held too, shows how long the lane takes.
  const { port: lanePort } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: LONG, maxTlsHandshakes: 1, priorityAlpn: CLUSTER_ALPN, priorityFrom: new Set(['127.0.0.1']) });
  await holdTurn(lanePort);
  t.ok(await (await Client.connect(t, lanePort, '127.0.0.1', generateKeyPair().keys, [CLUSTER_ALPN])).served(), 'from a member address the lane serves at once');
  t.notOk(served, 'from another address the claim waits behind the held turn');
  stalled.destroy();
  t.ok(await claimant, 'and is served in its turn');
});

t.test('dial with secureTimeoutMs waits for a slow TLS handshake once TCP is up; without it the connect time covers both', async (t) => {
  const { port } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: LONG });
  const busy = new TcpProxy(port); // a server whose kernel takes the connection while its process is busy
  await busy.listen();
  t.teardown(() => busy.close());
  busy.set('stall');
  const tlsOptions = { identity: identityOf(generateKeyPair().keys), verify: () => undefined };
  const target = { host: '127.0.0.1', port: busy.port };
  const impatient = dial(target, { connectTimeoutMs: 150, tls: tlsOptions });
  const patient = dial(target, { connectTimeoutMs: 150, secureTimeoutMs: LONG, tls: tlsOptions });
  await t.rejects(impatient, { code: 'P2P_CONNECT_FAILED' }, 'without it: given up while the handshake waits');
  busy.set('pass');
  const conn = await patient;
  t.teardown(() => conn.close());
  t.equal((await conn.request('PING', {}, 'PONG')).constructor, Object, 'with it: connected once the server gets to it, and served');
});

t.test('offersAlpn reads a real ClientHello, and anything cut short or malformed is "no", never a throw', async (t) => {
  const hello = async (alpn?: string[]): Promise<Buffer> => {
    const server = net.createServer();
    t.teardown(() => server.close());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const got = new Promise<Buffer>((resolve) => server.once('connection', (s) => s.once('data', (b: Buffer) => (resolve(b), s.destroy()))));
    const c = tls.connect({ ...clientOptions({ verify: () => undefined, alpn }, '127.0.0.1'), port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
    c.on('error', () => undefined);
    t.teardown(() => c.destroy());
    return got;
  };
  const withIt = await hello(['h2', CLUSTER_ALPN]);
  const without = await hello();
  const other = await hello(['p2pshare-clusterX']);
  t.ok(offersAlpn(withIt, CLUSTER_ALPN), 'found among several protocols');
  t.notOk(offersAlpn(without, CLUSTER_ALPN), 'no ALPN extension: no');
  t.notOk(offersAlpn(other, CLUSTER_ALPN), 'a longer name that starts the same: no');
  t.notOk(offersAlpn(withIt.subarray(0, 9), CLUSTER_ALPN), 'the headers alone: no');
  t.notOk(offersAlpn(Buffer.from('GET / HTTP/1.1\r\n'), CLUSTER_ALPN), 'not TLS: no');
  const thrown: string[] = [];
  const check = (b: Buffer): void => {
    try {
      offersAlpn(b, CLUSTER_ALPN);
    } catch (err) {
      thrown.push(`${b.toString('hex')}: ${(err as Error).message}`);
    }
  };
  for (let n = 0; n < withIt.length; n++) check(withIt.subarray(0, n));
  for (let i = 0; i < 2000; i++) {
    const garbled = Buffer.from(withIt);
    for (let k = 0; k < 3; k++) garbled[Math.floor(Math.random() * garbled.length)] = Math.floor(Math.random() * 256);
    check(garbled);
  }
  t.same(thrown, [], 'every prefix and 2,000 garbled hellos are answered without a throw');
});

t.test("peer handshake: a peer's id is the key its TLS certificate proved; without one it is refused", async (t) => {
  const { port, limiter } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: LONG });
  const alice = generateKeyPair().keys;
  const honest = await Client.connect(t, port, '127.0.0.1', alice);
  t.ok(remoteKey(honest.socket)?.equals(serverKeys.publicKey), "the client reads the server's key from its certificate");
  const welcome = await honest.handshake();
  t.equal(welcome.name, 'WELCOME');
  t.equal(decodeBody('WELCOME', welcome.body).peerId, peerIdOf(alice.publicKey), 'the peer id is the one of the key TLS proved');

  const anonymous = await Client.connect(t, port, '127.0.0.1', null);
  const refused = await anonymous.handshake();
  t.same({ code: refused.code, message: refused.message }, { code: 'P2P_NOT_AUTHENTICATED', message: 'peers only, with the certificate of their key' }, 'a client without a certificate is refused as a peer');
  const admin = await anonymous.handshake(Role.admin);
  t.same(admin.code, 'P2P_NOT_AUTHENTICATED', 'nor is it served in another role by a server of peers');
  t.equal((await anonymous.answer(anonymous.request('SEARCH', { text: 'x', limit: 1 }))).code, 'P2P_NOT_AUTHENTICATED', 'and nothing is served to it');

  // A certificate for a key one does not hold cannot even be presented: TLS needs the private key.
  t.throws(() => tls.createSecureContext({ cert: identityOf(alice).cert, key: identityOf(generateKeyPair().keys).key }), /key values mismatch/i, "alice's certificate with another key is refused before any byte is sent");

  await until('the refused connection to stay counted until closed', () => limiter.size >= 2, 5000, 5);
  t.equal((await honest.answer(honest.request('SEARCH', { text: 'x', limit: 1 }))).name, 'SEARCH_RESULT', 'the honest session notices nothing');
});

t.test('peer handshake: the order of messages is enforced', async (t) => {
  const { port } = await limitedServer(t, { maxConnections: 10, maxConnectionsPerIp: 10, handshakeTimeoutMs: LONG });
  const c = await Client.connect(t, port);
  const early = await c.answer(c.request('SEARCH', { text: 'x', limit: 1 }));
  t.same([early.code, early.message], ['P2P_NOT_AUTHENTICATED', 'SEARCH before the handshake completed'], 'no request before the handshake');
  t.equal((await c.handshake()).name, 'WELCOME', 'HELLO is answered with WELCOME');
  const twice = await c.handshake();
  t.same([twice.code, twice.message], ['P2P_UNEXPECTED_MESSAGE', 'HELLO twice']);
  t.ok(await c.served());
});
