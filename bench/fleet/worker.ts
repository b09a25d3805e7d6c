#!/usr/bin/env node
/**
 * One process of simulated peers for the fleet benchmark (bench/fleet.ts forks it with its WorkerSetup as
 * the only argument and an IPC channel). Each peer is the product's own tracker session: a TrackerClient
 * (peerd/tracker-client.ts) with the peer's own identity from the cache, a silent logger and announce()
 * returning its files, plus the blacklist re-sync a real peer sends on every session (syncBlacklist, or the
 * product's BlacklistCache with --blacklist-cache). Dialling, the handshake, heartbeats, failover, back-off and re-registration after a takeover are
 * therefore exactly the product's, whatever they become.
 *
 * The worker only watches: which sessions come up with which tracker, which REGISTERs are acknowledged,
 * which heartbeats are answered (by wrapping the session's Connection.request, see observe()), and how long
 * the lookups and searches it sends take. It reports all of it to the parent (ipc.ts).
 */
import { once } from 'node:events';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pino } from 'pino';
import { BlacklistCache } from '../../peerd/blacklist-cache.js';
import { TrackerClient } from '../../peerd/tracker-client.js';
import { parsePinnedAddressList, toP2PError, type Body, type Connection, type KnownKeys, type MessageName, type RequestOptions, type TlsIdentity } from '../../protocol/index.js';
import { epochMs, OpKind, Outcome, REPORT_EVERY_MS, type FromWorker, type ToWorker, type WorkerReport, type WorkerSetup } from './ipc.js';
import { loadIdentities } from './keys.js';
import { seededRandom as rng } from '../harness.js';
import { peerFiles, popularPerPeer, searchText, type SharedFile } from './workload.js';

/** Requests waiting for an answer, beyond which new ones are skipped (and counted) rather than queued. */
const MAX_IN_FLIGHT = 10_000;
const TICK_MS = 5;
/** Registration attempts per peer in the register phase (each is the client's own retrying request). */
const REGISTER_ATTEMPTS = 3;

const setup = JSON.parse(process.argv[2] ?? '{}') as WorkerSetup;
const trackers = parsePinnedAddressList(setup.trackers.join(','));
const silent = pino({ level: 'silent' });
/** What the peers with a log write it to: the worker's stderr (its log file), one JSON line each. */
const peerLog = setup.peerLogs > 0 ? pino({ level: 'info' }, pino.destination({ fd: 2, sync: false })) : silent;
const loggerFor = (peer: number): typeof silent => (peer < setup.first + setup.peerLogs ? peerLog.child({ peer }) : silent);
/**
 * Where each peer connects from, as a fleet comes from many hosts: 127.0.0.2 to 127.0.0.254 in turn (all of
 * 127/8 is this machine's), so each address has its own local ports and stays within the trackers' default
 * per-address limit (256 connections: 20,000 peers are about 79 per address, 158 while they move).
 */
const sourceAddress = (peer: number): string => `127.0.0.${2 + (peer % 253)}`;
const random = rng(0x5eed + setup.worker);

function send(msg: FromWorker): void {
  process.send?.(msg);
}

/** Tracker keys learned on first contact, shared by the worker's peers (each peerd keeps its own in SQLite). */
const learned = new Map<string, Buffer>();
const knownTrackers: KnownKeys = { get: (a) => learned.get(a), learn: (a, key) => void learned.set(a, key) };

/** What the peers saw since the last report. */
let report = emptyReport();
function emptyReport(): WorkerReport {
  return { sessions: [], acks: [], left: [], joined: [], samples: [], pongs: 0, pingFailures: 0, sessionsLost: 0, errors: {}, skipped: 0, inFlight: 0, loopDelayP99Ms: 0, loopDelayMaxMs: 0, at: 0 };
}

/** Connections observe() has wrapped already. */
const observed = new WeakSet<Connection>();

/**
 * Counts what the product's client does on a session without changing it: the heartbeats it sends and the
 * REGISTERs it makes (registerAll); everything else passes through. Once per connection (a standby session
 * made the one in use, then left as the standby again, is told of twice), and heartbeats only while it is
 * the session in use (`inUse`): a standby session's slower pings are not the heartbeats the main counts.
 */
function observe(conn: Connection, inUse: () => boolean, onPing: (answered: boolean) => void, onRegistered: () => void): void {
  if (observed.has(conn)) return;
  observed.add(conn);
  const request = conn.request;
  conn.request = function observedRequest<N extends MessageName, R extends MessageName>(name: N, body: Body<N>, expect: R, options?: RequestOptions): Promise<Body<R>> {
    const answer = request.call(conn, name, body, expect, options) as Promise<Body<R>>;
    if (name === 'PING' && inUse()) answer.then(() => onPing(true), () => onPing(false));
    else if (name === 'REGISTER') answer.then(onRegistered, () => undefined);
    return answer;
  };
}

/**
 * What a peer daemon's BlacklistCache (peerd/blacklist-cache.ts) sends the tracker: a BLACKLIST_SYNC with
 * the version it holds on every new session, three attempts. Without its verdict cache, an LRU of 10,000
 * entries that takes about 370 KB from the start: nothing for one daemon, 3.7 GB for a worker of 10,000
 * peers (and long garbage-collector pauses). --blacklist-cache uses the product's class instead.
 */
function syncBlacklist(client: TrackerClient): void {
  let version = '';
  client.on('session', () => {
    client.request('BLACKLIST_SYNC', { version }, 'BLACKLIST_STATE', 3).then(
      (state) => (version = state.version),
      () => undefined,
    );
  });
}

/** A simulated peer: the product's tracker session with this peer's identity and files. */
class SimPeer {
  readonly client: TrackerClient;
  /** announce() returns the files only once this is set (the connect phase measures sessions alone). */
  announcing: boolean;
  /** Registered at least once: lookups and searches may go out from it. */
  ready = false;
  left = false;
  /** Its place in `readyPeers` while ready. */
  slot = -1;
  private connected = false;

  constructor(
    readonly number: number,
    identity: TlsIdentity,
    readonly files: SharedFile[],
    announcing: boolean,
  ) {
    this.announcing = announcing;
    this.client = new TrackerClient({
      trackers,
      identity,
      knownTrackers,
      // Not listened on: the tracker only hands it to other peers in LOOKUP answers.
      advertisePort: () => 20_000 + (number % 40_000),
      announce: () => (this.announcing ? this.files : []),
      logger: loggerFor(number),
      localAddress: sourceAddress(number),
    });
    if (setup.productBlacklistCache) new BlacklistCache(this.client, silent);
    else syncBlacklist(this.client);
    this.client.on('session', (label: string) => {
      const rank = setup.trackers.indexOf(label);
      report.sessions.push(this.number, rank, epochMs());
      const conn = this.client.conn;
      if (!conn) return;
      observe(
        conn,
        () => this.client.conn === conn,
        (answered) => (answered ? report.pongs++ : report.pingFailures++),
        () => {
          report.acks.push(this.number, rank, epochMs());
          if (!this.ready && !this.left) makeReady(this);
        },
      );
    });
    this.client.on('state', (state: string) => {
      if (this.connected && state === 'connecting') report.sessionsLost++;
      this.connected = state === 'connected';
    });
  }

  /** Starts the session; resolves once the first one is up. */
  async start(): Promise<void> {
    const up = once(this.client, 'session');
    this.client.start();
    await up;
  }
}

const readyPeers: SimPeer[] = [];
function makeReady(p: SimPeer): void {
  p.ready = true;
  p.slot = readyPeers.length;
  readyPeers.push(p);
}
function unready(p: SimPeer): void {
  const last = readyPeers.pop()!;
  if (last !== p) {
    readyPeers[p.slot] = last;
    last.slot = p.slot;
  }
  p.ready = false;
  p.slot = -1;
}
function randomReady(): SimPeer | undefined {
  return readyPeers.length ? readyPeers[Math.floor(random() * readyPeers.length)] : undefined;
}

/** Runs `fn` on every item, `window` at a time. */
async function inWindow<T>(items: T[], window: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(window, items.length)) }, lane));
}

/** How many of something are due at `rate` per second since the rate was set. */
class Pacer {
  private since = 0;
  private done = 0;
  private rate = 0;

  set(perSecond: number): void {
    this.rate = perSecond;
    this.since = performance.now();
    this.done = 0;
  }

  due(): number {
    if (this.rate <= 0) return 0;
    const n = Math.floor(((performance.now() - this.since) * this.rate) / 1000) - this.done;
    this.done += n;
    return n;
  }
}

const lookups = new Pacer();
const searches = new Pacer();
const churn = new Pacer();
let searchLimit = 10_000;
let inFlight = 0;

function sample(kind: number, startedAt: number, outcome: number, count: number): void {
  inFlight--;
  report.samples.push(kind, epochMs(), performance.now() - startedAt, outcome, count);
}

function failed(kind: number, startedAt: number, err: unknown): void {
  const e = toP2PError(err);
  if (kind === OpKind.lookup && e.code === 'P2P_NOT_FOUND') return sample(kind, startedAt, Outcome.notFound, 0);
  report.errors[e.code] = (report.errors[e.code] ?? 0) + 1;
  sample(kind, startedAt, Outcome.failed, 0);
}

function lookup(): void {
  const p = randomReady();
  if (!p || inFlight >= MAX_IN_FLIGHT) return void report.skipped++;
  const file = p.files[Math.floor(random() * p.files.length)]!;
  const startedAt = performance.now();
  inFlight++;
  p.client.request('LOOKUP', { id: file.id }, 'LOOKUP_RESULT').then(
    (r) => sample(OpKind.lookup, startedAt, Outcome.ok, r.peers.length),
    (err: unknown) => failed(OpKind.lookup, startedAt, err),
  );
}

/** The name of one of some peer's own files (not a popular one): what a user searching by name was told of. */
function someOwnName(): string {
  const p = randomReady();
  if (!p) return 'report';
  const skip = popularPerPeer(setup.workload);
  return p.files[skip + Math.floor(random() * (p.files.length - skip))]?.name ?? 'report';
}

function search(): void {
  const p = randomReady();
  if (!p || inFlight >= MAX_IN_FLIGHT) return void report.skipped++;
  const text = searchText(random, someOwnName);
  const startedAt = performance.now();
  inFlight++;
  p.client.request('SEARCH', { text, limit: searchLimit }, 'SEARCH_RESULT').then(
    (r) => sample(OpKind.search, startedAt, Outcome.ok, r.files.length),
    (err: unknown) => failed(OpKind.search, startedAt, err),
  );
}

const initial: SimPeer[] = [];
/** Peers that joined during churn. */
const joined: SimPeer[] = [];
const spares: Array<{ number: number; identity: TlsIdentity }> = [];

/** One peer leaves as a peer daemon that stops does (LEAVE, close), and a new one joins with its files. */
function churnOne(): void {
  const leaving = randomReady();
  if (leaving) {
    unready(leaving);
    leaving.left = true;
    report.left.push(leaving.number, epochMs());
    void leaving.client.close();
  }
  const spare = spares.shift();
  if (!spare) return;
  const joining = new SimPeer(spare.number, spare.identity, peerFiles(setup.workload, spare.number), true);
  joined.push(joining);
  report.joined.push(spare.number, epochMs());
  void joining.start();
}

function tick(): void {
  for (let n = lookups.due(); n > 0; n--) lookup();
  for (let n = searches.due(); n > 0; n--) search();
  for (let n = churn.due(); n > 0; n--) churnOne();
}

const loopDelay = monitorEventLoopDelay({ resolution: 10 });

function flush(): void {
  report.inFlight = inFlight;
  report.loopDelayP99Ms = loopDelay.percentile(99) / 1e6;
  report.loopDelayMaxMs = loopDelay.max / 1e6;
  report.at = epochMs();
  loopDelay.reset();
  send({ t: 'report', report });
  report = emptyReport();
}

async function onCommand(msg: ToWorker): Promise<void> {
  switch (msg.t) {
    case 'connect':
      await inWindow(initial, msg.window, (p) => p.start());
      return send({ t: 'done', phase: 'connect', failures: 0 });
    case 'register': {
      let failures = 0;
      await inWindow(initial, msg.window, async (p) => {
        p.announcing = true;
        for (let attempt = 1; attempt <= REGISTER_ATTEMPTS; attempt++) {
          const ok = await p.client.registerAll().then(() => true, () => false);
          if (ok) return;
        }
        failures++;
      });
      return send({ t: 'done', phase: 'register', failures });
    }
    case 'load':
      searchLimit = msg.searchLimit;
      lookups.set(msg.lookupsPerSec);
      searches.set(msg.searchesPerSec);
      return;
    case 'churn':
      churn.set(msg.peersPerSec);
      return;
    case 'flush':
      flush();
      return send({ t: 'flushed' });
    case 'whereabouts': {
      const counts: Record<string, number> = {};
      for (const p of [...initial, ...joined]) {
        if (p.left) continue;
        const c = p.client;
        const key = `${c.current ?? '-'} ${c.role} ${c.state}`;
        counts[key] = (counts[key] ?? 0) + 1;
      }
      return send({ t: 'whereabouts', counts });
    }
    case 'exit':
      process.exit(0);
  }
}

function main(): void {
  const started = performance.now();
  const identities = loadIdentities(setup.first, setup.count);
  identities.forEach((identity, i) => initial.push(new SimPeer(setup.first + i, identity, peerFiles(setup.workload, setup.first + i), false)));
  loadIdentities(setup.spareFirst, setup.spareCount).forEach((identity, i) => spares.push({ number: setup.spareFirst + i, identity }));
  loopDelay.enable();
  setInterval(tick, TICK_MS);
  setInterval(flush, REPORT_EVERY_MS);
  process.on('message', (msg: ToWorker) => {
    onCommand(msg).catch((err: unknown) => fatal(err));
  });
  // The parent is gone (it ended or was killed): nothing left to report to.
  process.on('disconnect', () => process.exit(0));
  send({ t: 'ready', loadMs: performance.now() - started });
}

function fatal(err: unknown): void {
  const exit = (): never => process.exit(1);
  setTimeout(exit, 1000).unref();
  if (process.send) process.send({ t: 'fatal', message: (err as Error).stack ?? String(err) } satisfies FromWorker, exit);
  else exit();
}

process.on('unhandledRejection', fatal);
try {
  main();
} catch (err) {
  fatal(err);
}
