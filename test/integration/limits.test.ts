/**
 * The hardened limits (issue 3), each seen the way a misbehaving client meets it: raw bytes to a live
 * tracker, peer chunk server or control socket, and the ERROR frame (with its stable code) and closed
 * connection that come back, while honest clients on the same daemons notice nothing.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import tls from 'node:tls';
import {
  clientOptions,
  decodeBody,
  encodeFrame,
  Framer,
  generateKeyPair,
  Messages,
  remoteKey,
  Role,
  type Address,
  type Body,
  type Frame,
  type KeyPair,
  type MessageName,
  PEER_FEATURES,
  silentLogger,
  VirtualClock,
} from '../../protocol/index.js';
import { Fleet, type TestPeer } from '../helpers/fleet.js';
import { countingListener } from '../helpers/net.js';
import { until } from '../helpers/wait.js';
import { clientIdentity, identityOf } from '../helpers/tls.js';
import { TrackerClient } from '../../peerd/tracker-client.js';
import type { Tap } from '../helpers/tap.js';


const newKeys = (): KeyPair => generateKeyPair().keys;

/**
 * A raw client: it writes whatever bytes it is given and decodes whatever frames come back. To a daemon's
 * TCP port it speaks TLS, as every client does (with a key of its own); to the control socket, plain.
 */
class Raw {
  readonly frames: Frame[] = [];
  private readonly framer = new Framer(64 * 1024 * 1024);
  private nextId = 1;
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.framer.push(chunk, (f) => this.frames.push({ ...f, body: Buffer.from(f.body) })));
    socket.on('error', () => undefined); // a reset is one of the outcomes we look at, not a crash
  }

  static async connect(t: Tap, target: Address | string, keys: KeyPair = newKeys()): Promise<Raw> {
    const socket =
      typeof target === 'string'
        ? net.connect(target)
        : tls.connect({ ...clientOptions({ identity: identityOf(keys), verify: () => undefined }, target.host), port: target.port, host: target.host });
    t.teardown(() => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      socket.once(typeof target === 'string' ? 'connect' : 'secureConnect', resolve);
      socket.once('error', reject);
    });
    return new Raw(socket);
  }

  get closed(): boolean {
    return this.socket.closed;
  }

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Sends a request frame and returns its request id. */
  request<N extends MessageName>(name: N, body: Body<N>): number {
    const id = this.nextId++;
    this.send(encodeFrame(name, id, body));
    return id;
  }

  /** Waits for the answer to request `id`: the message's name, and the code if it is an ERROR. */
  async answer(id: number, ms = 3000): Promise<{ name: MessageName; code?: string; body: Buffer }> {
    const f = await until(`an answer to request ${id}`, () => this.frames.find((x) => x.requestId === id) ?? (this.closed ? null : undefined), ms);
    if (!f) throw new Error(`the connection closed without answering request ${id} (last words: ${this.lastWords.join(', ') || 'none'})`);
    return f.name === 'ERROR' ? { name: f.name, code: decodeBody('ERROR', f.body).code, body: f.body } : { name: f.name, body: f.body };
  }

  /** The codes of every ERROR frame received so far with request id 0 (a server's last word). */
  get lastWords(): string[] {
    return this.frames.filter((f) => f.name === 'ERROR' && f.requestId === 0).map((f) => decodeBody('ERROR', f.body).code);
  }

  /** Waits until the server has closed the connection; returns its last words. */
  async closedBy(ms = 3000): Promise<string[]> {
    await until('the server to close the connection', () => (this.closed ? true : undefined), ms);
    return this.lastWords;
  }

  /** The peer handshake over raw frames (TLS proved our key); with `serverKey`, also checks the server's. */
  async handshake(serverKey?: Buffer, features = 0): Promise<Body<'WELCOME'>> {
    if (serverKey && !(this.socket instanceof tls.TLSSocket && remoteKey(this.socket)?.equals(serverKey))) throw new Error('the server proved another key');
    const link = features ? Buffer.from([features]) : Buffer.alloc(0);
    const hello = await this.answer(this.request('HELLO', { role: Role.peer, listenPort: 0, software: 'limits-test', link }));
    if (hello.name !== 'WELCOME') throw new Error(`HELLO answered with ${hello.name} ${hello.code ?? ''}`);
    return decodeBody('WELCOME', hello.body);
  }

  /** A PING that must come back as PONG (the connection is alive and served). */
  async ping(): Promise<boolean> {
    return (await this.answer(this.request('PING', {}))).name === 'PONG';
  }
}


/** A frame header that announces `bodyBytes` of body, and `sent` of those bytes. */
function partialFrame(name: MessageName, bodyBytes: number, sent: number): Buffer {
  const head = Buffer.alloc(10);
  head[0] = 1;
  head[1] = Messages[name].code;
  head.writeUInt32BE(77, 2);
  head.writeUInt32BE(bodyBytes, 6);
  return Buffer.concat([head, Buffer.alloc(sent, 0x41)]);
}

const file = (name: string, n = 0): Body<'REGISTER'>['files'][number] => ({ id: randomBytes(32), size: 1000 + n, name, complete: true });

/** A healthy peer with a shared file, and a check that it can still find it. */
async function healthy(fleet: Fleet, name = 'healthy'): Promise<{ peer: TestPeer; works: () => Promise<boolean> }> {
  const peer = await fleet.startPeer(name);
  fs.writeFileSync(path.join(peer.shareDir, `${name}.txt`), name);
  await Fleet.held(peer, `${name}.txt`, 1);
  return {
    peer,
    works: async () => (await peer.call('search', { text: `${name}.txt` })).length === 1 && (await peer.call('status', {})).tracker.state === 'connected',
  };
}

t.test('handshake deadline: a client that never finishes the handshake is told and closed', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker({ handshakeTimeoutMs: 300 });
  const silent = await Raw.connect(t, fleet.trackerAddress);
  const halfway = await Raw.connect(t, fleet.trackerAddress);
  const hello = await halfway.answer(halfway.request('PING', {}));
  t.equal(hello.name, 'PONG', 'the half-way client is served PING before its HELLO');
  t.same(await silent.closedBy(), ['P2P_HANDSHAKE_TIMEOUT'], 'a socket that sends nothing gets P2P_HANDSHAKE_TIMEOUT and is closed');
  t.same(await halfway.closedBy(), ['P2P_HANDSHAKE_TIMEOUT'], 'so does one that pings and never says HELLO');
  const honest = await Raw.connect(t, fleet.trackerAddress);
  await honest.handshake();
  t.ok(await honest.ping(), 'a client that completes the handshake in time is served');
});

t.test('read deadline: half a frame, or a frame dribbled byte by byte, is cut off (tracker and peer)', async (t) => {
  const fleet = new Fleet(t);
  // A long handshake deadline, so that only the read deadline (5 s) can fire on the tracker.
  await fleet.startTracker({ handshakeTimeoutMs: 60_000 });
  const { peer, works } = await healthy(fleet);

  const half = await Raw.connect(t, fleet.trackerAddress);
  await half.handshake();
  half.send(partialFrame('SEARCH', 100, 40));

  const dribbler = await Raw.connect(t, fleet.trackerAddress);
  await dribbler.handshake();
  const slow = partialFrame('SEARCH', 2000, 2000);
  let at = 0;
  const drip = setInterval(() => {
    if (!dribbler.closed && at < slow.length) dribbler.send(slow.subarray(at, ++at));
  }, 250);
  t.teardown(() => clearInterval(drip));

  const atPeer = await Raw.connect(t, peer.daemon.chunkServer.address!);
  await atPeer.handshake(peer.daemon.keys.publicKey);
  atPeer.send(partialFrame('GET_CHUNK', 36, 10));
  // The chunk server's handshake deadline (2 s, not settable through PeerDaemon) in the same wait.
  const noHandshakeAtPeer = await Raw.connect(t, peer.daemon.chunkServer.address!);

  const started = Date.now();
  t.same(await noHandshakeAtPeer.closedBy(4000), ['P2P_HANDSHAKE_TIMEOUT'], 'the chunk server closes a socket that never says HELLO');
  t.ok(await works(), 'the healthy peer works while the attackers hang on');
  t.same(await half.closedBy(8000), ['P2P_READ_TIMEOUT'], 'half a frame then silence: P2P_READ_TIMEOUT from the tracker, connection closed');
  t.same(await dribbler.closedBy(3000), ['P2P_READ_TIMEOUT'], 'a frame dribbled a byte at a time is cut off just the same');
  t.ok(at < slow.length, 'before the dribbler could finish its frame');
  t.same(await atPeer.closedBy(3000), ['P2P_READ_TIMEOUT'], 'the chunk server applies the read deadline too');
  t.ok(Date.now() - started < 9000, 'within the documented deadline');
  t.ok(await works(), 'and the healthy peer never noticed');
});

t.test('idle timeout (the lease): a silent session is closed and its files leave the index', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker({ leaseMs: 1000, handshakeTimeoutMs: 60_000 });
  const { peer, works } = await healthy(fleet);
  const idle = await Raw.connect(t, fleet.trackerAddress);
  await idle.handshake();
  t.equal((await idle.answer(idle.request('REGISTER', { files: [file('idle.txt')] }))).name, 'OK');
  t.equal((await peer.call('search', { text: 'idle.txt' })).length, 1, 'the idle client registered a file');
  t.same(await idle.closedBy(5000), ['P2P_IDLE_TIMEOUT'], 'after the lease without a word: P2P_IDLE_TIMEOUT and closed');
  t.same(await peer.call('search', { text: 'idle.txt' }), [], "the silent peer's file left the index");
  t.ok(await works(), 'the healthy peer, which keeps its lease with heartbeats, stays connected and listed');
});

t.test('heartbeats slow down with the fleet: a lease of 900 ms (a PING every 300 ms) until the peers known would send more than --peer-heartbeats-per-s', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker({ peerHeartbeatsPerSecond: 10, leaseMs: 2400 });
  const leases: number[] = [];
  for (let i = 0; i < 9; i++) {
    const raw = await Raw.connect(t, fleet.trackerAddress);
    leases.push((await raw.handshake()).leaseMs);
    t.equal((await raw.answer(raw.request('REGISTER', { files: [file(`peer-${i}.txt`)] }))).name, 'OK');
  }
  // 3 peers (the one in its handshake counts) at 300 ms are 10 PINGs a second; each one more stretches the
  // interval to peers/10 seconds.
  t.same(leases, [900, 900, 900, 1200, 1500, 1800, 2100, 2400, 2400], 'the lease told grows in step with the peers');
  const late = await Raw.connect(t, fleet.trackerAddress);
  t.equal((await late.handshake()).leaseMs, 2400, 'and never beyond --lease-ms, after which a silent session is closed');
});

t.test('a peer told the lease of a small fleet is told the new one (LEASE) once the fleet has grown, if it reads LEASE', async (t) => {
  const fleet = new Fleet(t);
  // A long --lease-ms: these raw peers stay silent between their PINGs.
  await fleet.startTracker({ peerHeartbeatsPerSecond: 10, leaseMs: 10_000 });
  const early = await Raw.connect(t, fleet.trackerAddress);
  t.equal((await early.handshake(undefined, PEER_FEATURES.lease)).leaseMs, 900, 'the first peer: 900 ms');
  const old = await Raw.connect(t, fleet.trackerAddress);
  t.equal((await old.handshake()).leaseMs, 900, 'a peer of 0.1 (no features in its HELLO): 900 ms too');
  for (let i = 0; i < 7; i++) await (await Raw.connect(t, fleet.trackerAddress)).handshake();
  t.ok(await early.ping(), 'with 9 peers the lease is 2,700 ms: at its next PING...');
  const lease = await until('a LEASE event', () => early.frames.find((f) => f.name === 'LEASE'));
  t.equal(lease.requestId, 0, '...the peer gets an event (request id 0)');
  t.same(decodeBody('LEASE', lease.body), { leaseMs: 2700 }, 'telling it the lease of 9 peers');
  // Frames come in order: anything sent with one PING's answer is in before the next one's.
  t.ok((await early.ping()) && (await early.ping()), 'the next PINGs are answered as before');
  t.equal(early.frames.filter((f) => f.name === 'LEASE').length, 1, 'and bring no second LEASE: the lease has not changed since');
  t.ok((await old.ping()) && (await old.ping()), 'the 0.1 peer is served as before');
  t.notOk(old.frames.some((f) => f.name === 'LEASE'), 'and never gets a message it would not know');
});

t.test('a peer daemon moves its heartbeats to the lease the tracker tells it during its session', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker({ peerHeartbeatsPerSecond: 10, leaseMs: 10_000 });
  // Its heartbeats run on a clock the test moves: it counts them exactly.
  const clock = new VirtualClock();
  const client = new TrackerClient({ trackers: [fleet.trackerAddress], ...clientIdentity(), advertisePort: () => 4000, announce: () => [], logger: silentLogger, clock });
  t.teardown(() => client.close());
  client.start();
  await until('a session', () => client.state === 'connected');
  t.equal(client.leaseMs, 900, 'alone: 900 ms, a PING every 300 ms');
  const conn = client.conn!;
  const request = conn.request.bind(conn);
  let pings = 0;
  conn.request = ((...args: Parameters<typeof conn.request>) => {
    if (args[0] === 'PING') pings++;
    return request(...args);
  }) as typeof conn.request;
  for (let i = 0; i < 8; i++) await (await Raw.connect(t, fleet.trackerAddress)).handshake();
  clock.advance(300);
  t.equal(pings, 1, 'its next PING...');
  await until('the new lease', () => client.leaseMs === 2700);
  t.equal(client.state, 'connected', '...brings the lease of 9 peers, 2,700 ms, on the same session');
  pings = 0;
  clock.advance(2700);
  t.equal(pings, 3, 'it pings every 900 ms from then on (3 in 2.7 s; every 300 ms as well would be 9 more)');
});

t.test('after a restart, the first peers back are told the lease of the fleet the tracker had, not of the few it has so far', async (t) => {
  const fleet = new Fleet(t);
  const opts = { peerHeartbeatsPerSecond: 10, leaseMs: 10_000 };
  await fleet.startTracker(opts);
  const raws: Raw[] = [];
  for (let i = 0; i < 8; i++) {
    const raw = await Raw.connect(t, fleet.trackerAddress);
    raws.push(raw);
    await raw.handshake();
  }
  await fleet.tracker.close();
  for (const raw of raws) raw.socket.destroy();
  await fleet.startTracker(opts);
  const first = await Raw.connect(t, fleet.trackerAddress);
  // 8 peers at 10 PINGs a second: one every 800 ms each, a lease of 2,400 ms (a lone peer: 900).
  t.equal((await first.handshake()).leaseMs, 2400, 'the first peer back pings as one of 8, as it will be once the others are back');
});

t.test('connections per IP address and in total', async (t) => {
  t.test('per IP', async (t) => {
    const fleet = new Fleet(t);
    await fleet.startTracker({ maxConnectionsPerIp: 2 });
    const a = await Raw.connect(t, fleet.trackerAddress);
    const b = await Raw.connect(t, fleet.trackerAddress);
    const c = await Raw.connect(t, fleet.trackerAddress);
    t.same(await c.closedBy(), ['P2P_TOO_MANY_CONNECTIONS'], 'the third connection from one address gets P2P_TOO_MANY_CONNECTIONS and is closed');
    t.ok((await a.ping()) && (await b.ping()), 'the first two are still served');
    a.socket.destroy();
    const d = await until('a slot to free up', async () => {
      const r = await Raw.connect(t, fleet.trackerAddress);
      if (await r.ping().catch(() => false)) return r;
      r.socket.destroy();
      return undefined;
    });
    t.ok(await d.ping(), 'closing one frees its slot');
  });

  t.test('a peer may pick the address it connects from (localAddress): each address has its own limit', async (t) => {
    const fleet = new Fleet(t);
    await fleet.startTracker({ maxConnectionsPerIp: 1 });
    const from = ['127.0.0.8', '127.0.0.9'];
    const clients = from.map(
      (localAddress) =>
        new TrackerClient({ trackers: [fleet.trackerAddress], ...clientIdentity(), advertisePort: () => 4000, announce: () => [], logger: silentLogger, localAddress }),
    );
    for (const c of clients) {
      t.teardown(() => c.close());
      c.start();
    }
    await until('both sessions', () => clients.every((c) => c.state === 'connected'));
    t.same(
      clients.map((c) => c.observedHost),
      from,
      'the tracker sees each from its own address, and takes both though it allows one connection per address',
    );
  });

  t.test('in total', async (t) => {
    const fleet = new Fleet(t);
    await fleet.startTracker({ maxConnections: 2 });
    const a = await Raw.connect(t, fleet.trackerAddress);
    await Raw.connect(t, fleet.trackerAddress);
    const c = await Raw.connect(t, fleet.trackerAddress);
    t.same(await c.closedBy(), ['P2P_TOO_MANY_CONNECTIONS'], 'the connection over the total gets P2P_TOO_MANY_CONNECTIONS');
    t.ok(await a.ping(), 'the others are still served');
  });
});

t.test('requests in flight per connection', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker({ maxInFlight: 2 });
  const greedy = await Raw.connect(t, fleet.trackerAddress);
  const other = await Raw.connect(t, fleet.trackerAddress);
  // Ten requests in one write: the tracker reads them all before it can answer any.
  greedy.send(Buffer.concat(Array.from({ length: 10 }, (_, i) => encodeFrame('PING', 100 + i, {}))));
  const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => greedy.answer(100 + i)));
  const refused = answers.filter((a) => a.name === 'ERROR');
  t.ok(refused.length >= 1, `requests over the limit are refused (${refused.length} of 10)`);
  t.ok(answers.length - refused.length >= 1, 'those within it are answered');
  t.ok(refused.every((a) => a.code === 'P2P_TOO_MANY_REQUESTS'), 'with P2P_TOO_MANY_REQUESTS');
  t.ok(await greedy.ping(), 'the connection stays open and serves requests again once they finish');
  t.ok(await other.ping(), 'other connections are not affected');
});

t.test('files per registration and file names', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker({ maxFilesPerRegister: 3 });
  const { peer, works } = await healthy(fleet);
  const raw = await Raw.connect(t, fleet.trackerAddress);
  await raw.handshake();
  const register = async (...files: Body<'REGISTER'>['files']): Promise<string> => {
    const a = await raw.answer(raw.request('REGISTER', { files }));
    return a.code ?? a.name;
  };
  const listed = async (text: string): Promise<number> => (await peer.call('search', { text })).length;

  t.equal(await register(file('many-1'), file('many-2'), file('many-3'), file('many-4')), 'P2P_TOO_MANY_FILES', 'four files in one registration: P2P_TOO_MANY_FILES');
  t.equal(await listed('many-'), 0, 'none of them is listed');
  t.equal(await register(file('three-1'), file('three-2'), file('three-3')), 'OK', 'three files are accepted');
  t.equal(await listed('three-'), 3, 'and listed');

  const bad: Array<[string, string]> = [
    ['a/b', 'a slash'],
    ['a\\b', 'a backslash'],
    ['..', "'..'"],
    ['.', "'.'"],
    ['x\u0000y', 'a NUL'],
    ['x\ny', 'a newline'],
    ['x\u007fy', 'DEL'],
    ['', 'an empty name'],
    ['a'.repeat(300), '300 bytes'],
    ['é'.repeat(128), '256 bytes of UTF-8 in 128 characters'],
  ];
  for (const [name, what] of bad) t.equal(await register(file(name)), 'P2P_BAD_NAME', `a name with ${what} is refused with P2P_BAD_NAME`);
  t.equal(await register(file('fine-with-bad'), file('../escape')), 'P2P_BAD_NAME', 'one bad name refuses the whole registration');
  t.equal(await listed('fine-with-bad'), 0, 'so its good companion is not listed either');
  t.equal(await register(file('a'.repeat(255))), 'OK', 'a 255-byte name is accepted');
  t.equal(await register(file('x..y'), file('notes...txt'), file('ünï')), 'OK', "dots inside a name and non-ASCII names are accepted (only '.' and '..' mean a folder)");
  t.ok(await raw.ping(), 'the client that sent bad names is still connected (bad input, not bad framing)');
  t.ok(await works(), 'and the healthy peer carries on');
});

t.test('a frame over the size limit is refused from its header and the connection closed; others carry on', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const { peer, works } = await healthy(fleet);
  const targets: Array<[string, Address | string, number]> = [
    ['the tracker', fleet.trackerAddress, 8 * 1024 * 1024],
    ['a chunk server', peer.daemon.chunkServer.address!, 64 * 1024],
    ['the control socket', peer.daemon.socketPath, 1024 * 1024],
  ];
  for (const [what, target, max] of targets) {
    const raw = await Raw.connect(t, target);
    // Only the header: the refusal must not wait for (or buffer) the body.
    raw.send(partialFrame('PING', max + 1, 0));
    t.same(await raw.closedBy(), ['P2P_FRAME_TOO_LARGE'], `${what}: a header announcing ${max + 1} bytes gets P2P_FRAME_TOO_LARGE and is closed`);
    // A frame of exactly the limit passes the size check and reaches the decoder (a PING has no body,
    // so the decoder is the one to object).
    const fits = await Raw.connect(t, target);
    fits.send(partialFrame('PING', max, max));
    t.equal((await fits.answer(77, 5000)).code, 'P2P_MALFORMED', `${what}: a frame of exactly ${max} bytes is read in full and judged by its content`);
    t.ok(await works(), 'the healthy peer keeps working');
  }
});

t.test('the identity key, data folder and control socket are private', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const p = await fleet.startPeer('p');
  const mode = (f: string): number => fs.statSync(f).mode & 0o777;
  t.equal(mode(path.join(p.dataDir, 'identity.key')).toString(8), '600', 'identity.key is 0600');
  t.equal(mode(p.dataDir).toString(8), '700', 'the data folder is 0700');
  t.equal(mode(p.daemon.socketPath).toString(8), '600', 'the control socket is 0600');
});

t.test('a peer told of a new main, then told its own tracker is main again before it moved, stays (no handshake with the other)', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  // The other tracker: a listener that only counts who dials it.
  const other = await countingListener(t);
  const otherLabel = `127.0.0.1:${other.port}`;
  const ownLabel = `${fleet.trackerAddress.host}:${fleet.trackerAddress.port}`;
  const clock = new VirtualClock();
  const client = new TrackerClient({
    trackers: [fleet.trackerAddress, { host: '127.0.0.1', port: other.port }],
    ...clientIdentity(),
    advertisePort: () => 4000,
    announce: () => [],
    logger: silentLogger,
    clock,
    moveSpreadMs: 1000,
    random: () => 0.5,
  });
  t.teardown(() => client.close());
  client.start();
  await until('a session', () => client.state === 'connected');
  const conn = client.conn!;
  // What the cluster tells its peers when a backup is main for a moment and the better-ranked tracker takes
  // command back (TRACKER_CHANGED, as the tracker's broadcast delivers it).
  conn.emit('event', 'TRACKER_CHANGED', { primary: otherLabel, term: 4 });
  conn.emit('event', 'TRACKER_CHANGED', { primary: ownLabel, term: 6 });
  clock.advance(1000);
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(other.dialled(), 0, 'the move told first is not made');
  t.equal(client.current, ownLabel, 'it stays with its tracker');
  t.equal(client.state, 'connected', 'on the same session');
  // The same first event alone does move it (the test can see a move).
  conn.emit('event', 'TRACKER_CHANGED', { primary: otherLabel, term: 7 });
  clock.advance(1000);
  await until('a dial of the new main', () => other.dialled() > 0);
  t.pass('told of a new main alone, it dials it after its delay');
});
