/**
 * Real sockets on 127.0.0.1, port 0: a server that wraps each accepted socket in a Connection, clients
 * dialed through the public `dial`, and raw sockets for sending bytes no honest client would send.
 */
import { once } from 'node:events';
import net from 'node:net';
import { Connection, Framer, decodeBody, dial, type Address, type ConnectionOptions, type DialOptions, type Frame, type RequestHandler } from '../../protocol/index.js';
import type { PeerDaemonOptions } from '../../peerd/index.js';
import { Fleet, type TestPeer } from './fleet.js';
import { TcpProxy } from './relay.js';
import type { Tap } from './tap.js';

export interface TestServer {
  readonly port: number;
  /** Server-side connections, in the order they were accepted. */
  readonly connections: Connection[];
  /** Resolves with the next server-side connection to be accepted (or the n-th, counting from 1). */
  accepted(n?: number): Promise<Connection>;
  dial(options?: DialOptions): Promise<Connection>;
  raw(): Promise<net.Socket>;
}

export async function startServer(t: Tap, handler: RequestHandler | undefined, options: ConnectionOptions = {}): Promise<TestServer> {
  const connections: Connection[] = [];
  const waiters: Array<{ n: number; resolve: (c: Connection) => void }> = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const conn = new Connection(socket, options);
    if (handler) conn.onRequest(handler);
    connections.push(conn);
    for (const w of waiters.filter((w) => w.n === connections.length)) w.resolve(conn);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const clients: Array<Connection | net.Socket> = [];
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port,
    connections,
    accepted(n = connections.length + 1) {
      const existing = connections[n - 1];
      if (existing) return Promise.resolve(existing);
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    async dial(dialOptions = {}) {
      const conn = await dial({ host: '127.0.0.1', port }, dialOptions);
      clients.push(conn);
      return conn;
    },
    async raw() {
      const socket = net.connect(port, '127.0.0.1');
      clients.push(socket);
      await once(socket, 'connect');
      return socket;
    },
  };
}

export interface RawOutcome {
  /** Every frame the raw socket received before it closed. */
  frames: Frame[];
  /** The ERROR frames among them, decoded. */
  errors: Array<{ requestId: number; code: string; message: string }>;
}

/** Collects what the other side sends a raw socket until it closes the connection. */
export async function readUntilClosed(socket: net.Socket): Promise<RawOutcome> {
  const framer = new Framer();
  const frames: Frame[] = [];
  socket.on('data', (chunk: Buffer) => framer.push(chunk, (f) => frames.push({ ...f, body: Buffer.from(f.body) })));
  if (!socket.closed) await once(socket, 'close');
  const errors = frames.filter((f) => f.name === 'ERROR').map((f) => ({ requestId: f.requestId, ...decodeBody('ERROR', f.body) }));
  return { frames, errors };
}

/** The settled state of a promise, without waiting for it. */
export function track<T>(p: Promise<T>): { readonly state: 'pending' | 'resolved' | 'rejected'; readonly error: unknown; readonly value: T | undefined } {
  const s: { state: 'pending' | 'resolved' | 'rejected'; error: unknown; value: T | undefined } = { state: 'pending', error: undefined, value: undefined };
  p.then(
    (v) => {
      s.state = 'resolved';
      s.value = v;
    },
    (e: unknown) => {
      s.state = 'rejected';
      s.error = e;
    },
  );
  return s;
}

/** A listener on 127.0.0.1 that only counts who dials it, closing each at once: whether a client dialled at all. */
export async function countingListener(t: Tap): Promise<{ port: number; dialled: () => number }> {
  let dialled = 0;
  const server = net.createServer((socket) => {
    dialled++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return { port: (server.address() as net.AddressInfo).port, dialled: () => dialled };
}

/** Lets pending I/O callbacks and promise reactions run (one turn of the event loop, not a sleep). */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A TCP relay to `target()` that records every byte it passes, both ways: what a sniffer on the wire sees. */
export async function sniffer(t: Tap, target: () => number): Promise<{ address: Address; seen: () => Buffer; bytes: () => number }> {
  const relay = new TcpProxy(target, { record: true });
  await relay.listen();
  t.teardown(() => relay.close());
  return { address: { host: '127.0.0.1', port: relay.port }, seen: () => relay.seen(), bytes: () => relay.bytes() };
}

export interface Sniffed {
  fleet: Fleet;
  seeder: TestPeer;
  downloader: TestPeer;
  /** What passes between the peers and the tracker, and between the downloader and the seeder. */
  onTrackerLink: Awaited<ReturnType<typeof sniffer>>;
  onPeerLink: Awaited<ReturnType<typeof sniffer>>;
}

/**
 * A tracker, a seeder and a downloader with a sniffer on every link: both peers reach the tracker through
 * one, and the seeder advertises the other's address, so the tracker sends downloaders through it.
 */
export async function sniffedPeers(t: Tap, options: { seeder?: Partial<PeerDaemonOptions>; downloader?: Partial<PeerDaemonOptions> } = {}): Promise<Sniffed> {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const onTrackerLink = await sniffer(t, () => fleet.trackerAddress.port);
  let seederPort = 0;
  const onPeerLink = await sniffer(t, () => seederPort);
  const trackers = [onTrackerLink.address];
  const seeder = await fleet.startPeer('seeder', { trackers, advertise: onPeerLink.address, ...options.seeder });
  seederPort = seeder.daemon.chunkServer.address!.port;
  const downloader = await fleet.startPeer('downloader', { trackers, ...options.downloader });
  return { fleet, seeder, downloader, onTrackerLink, onPeerLink };
}
