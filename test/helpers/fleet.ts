/**
 * A fleet for integration tests: real Trackers and real PeerDaemons (the same classes the programs
 * run), on 127.0.0.1 with ports from listen(0), in a temporary folder that is removed afterwards. A
 * tracker cluster in this process is planned first (planCluster: members on reserved ports, each with its
 * log kept, optionally reaching the others through proxies that can cut the links), then started and
 * stopped a member at a time; startCluster does both for the common case.
 */
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { AdminClient } from '../../cli/admin.js';
import { Tracker, type TrackerOptions } from '../../daemon/tracker.js';
import { ControlClient, PeerDaemon, type PeerDaemonOptions } from '../../peerd/index.js';
import type { Address } from '../../protocol/index.js';
import { closeMesh, proxyMesh, setLinks, type ProxyMesh, type ProxyMode } from './relay.js';
import { reservePorts, until } from './wait.js';
import type { Tap } from './tap.js';


export const ADMIN_TOKEN = 'test-admin-token-0123456789';

/** The two files hold the same bytes. */
export function sameContent(a: string, b: string): boolean {
  return fs.readFileSync(a).equals(fs.readFileSync(b));
}

export interface TestPeer {
  name: string;
  daemon: PeerDaemon;
  shareDir: string;
  dataDir: string;
  /** Runs one control command against this peer, as `p2p` would. */
  call: ControlClient['call'];
  stop(): Promise<void>;
}

/** A tracker of a planned cluster: started and stopped at will, its log lines (JSON, level info) kept. */
export interface ClusterMember {
  name: string;
  port: number;
  dataDir: string;
  tracker: Tracker | undefined;
  log: Array<Record<string, unknown>>;
}

const loopback = (port: number): Address => ({ host: '127.0.0.1', port });

export class Fleet {
  readonly dir: string;
  tracker!: Tracker;
  trackerAddress!: Address;
  /** The trackers of the planned cluster, in rank order. */
  readonly members: ClusterMember[] = [];
  /** proxies[i][j]: how member i reaches member j (a cluster planned with proxies). */
  proxies: ProxyMesh = [];
  readonly peers: TestPeer[] = [];
  private memberOptions: Partial<TrackerOptions> = {};
  private readonly admins: AdminClient[] = [];

  constructor(t: Tap) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-test-'));
    t.teardown(() => this.close());
  }

  async startTracker(opts: Partial<TrackerOptions> = {}, port = 0): Promise<Tracker> {
    this.tracker = new Tracker({ listen: { host: '127.0.0.1', port }, dataDir: path.join(this.dir, 'tracker'), adminToken: ADMIN_TOKEN, ...opts });
    this.trackerAddress = await this.tracker.listen();
    return this.tracker;
  }

  /**
   * Plans a cluster of trackers in this process on `ports` (reserved: reservePorts), in rank order, none
   * started yet. With `proxies`, each member reaches each other one through its own TcpProxy (link).
   */
  async planCluster(ports: number[], opts: Partial<TrackerOptions> = {}, { proxies = false } = {}): Promise<void> {
    this.memberOptions = opts;
    this.members.push(...ports.map((port, i) => ({ name: `t${i}`, port, dataDir: path.join(this.dir, `tracker${i}`), tracker: undefined, log: [] })));
    if (proxies) this.proxies = await proxyMesh(ports);
  }

  /** Starts member `i` of the planned cluster (again, after stopMember: same folder). */
  async startMember(i: number): Promise<Tracker> {
    const m = this.members[i]!;
    const cluster = this.members.map((o, j) => (j === i || !this.proxies[i] ? loopback(o.port) : loopback(this.proxies[i]![j]!.port)));
    const logger = pino({ level: 'info', base: { tracker: m.name } }, { write: (line: string) => void m.log.push(JSON.parse(line) as Record<string, unknown>) });
    m.tracker = new Tracker({ listen: loopback(m.port), cluster, dataDir: m.dataDir, adminToken: ADMIN_TOKEN, logger, ...this.memberOptions });
    await m.tracker.listen();
    return m.tracker;
  }

  async stopMember(i: number): Promise<void> {
    const m = this.members[i]!;
    await m.tracker?.close();
    m.tracker = undefined;
  }

  /** Member `i`'s running Tracker. */
  trackerAt(i: number): Tracker {
    return this.members[i]!.tracker!;
  }

  /** Every running member's Tracker, in rank order. */
  get trackers(): Tracker[] {
    return this.members.flatMap((m) => (m.tracker ? [m.tracker] : []));
  }

  /** An admin session with member `i`, closed at the end. */
  async admin(i: number): Promise<AdminClient> {
    const c = await AdminClient.connect(`127.0.0.1:${this.members[i]!.port}`, ADMIN_TOKEN);
    this.admins.push(c);
    return c;
  }

  /** Cuts (drop, stall) or heals (pass) every link between member i and each of `others`, both ways. */
  link(i: number, others: number[], mode: ProxyMode): void {
    setLinks(this.proxies, i, others, mode);
  }

  /** All running members agree: `main` acts, every other one is a backup with the same state. */
  converged(main: number): boolean {
    const mainTracker = this.trackerAt(main);
    if (mainTracker.cluster.role !== 'primary') return false;
    const hash = mainTracker.state.stateHash();
    return this.trackers.every((tr) => tr === mainTracker || (tr.cluster.role === 'backup' && tr.state.term === mainTracker.state.term && tr.state.stateHash() === hash));
  }

  /** Every (member, term) in which a member became main, from the logs. */
  primaryTerms(): Array<{ name: string; term: number }> {
    return this.members.flatMap((m) => m.log.filter((l) => l.to === 'primary').map((l) => ({ name: m.name, term: l.term as number })));
  }

  /**
   * `n` trackers of one cluster in this process, in rank order; `tracker` is the first, and this resolves
   * once it is the main and the others its backups.
   */
  async startCluster(n: number, opts: Partial<TrackerOptions> = {}): Promise<Tracker[]> {
    await this.planCluster(await reservePorts(n), opts);
    for (let i = 0; i < n; i++) await this.startMember(i);
    const trackers = this.trackers;
    this.tracker = trackers[0]!;
    this.trackerAddress = this.tracker.address!;
    await until('the first tracker of the cluster as main, the others as its backups', () =>
      this.tracker.cluster.isPrimary && trackers.slice(1).every((tr) => tr.cluster.role === 'backup'),
    );
    return trackers;
  }

  async startPeer(name: string, opts: Partial<PeerDaemonOptions> = {}): Promise<TestPeer> {
    const shareDir = path.join(this.dir, name, 'share');
    const dataDir = path.join(this.dir, name, 'data');
    fs.mkdirSync(shareDir, { recursive: true });
    const daemon = new PeerDaemon({ trackers: [this.trackerAddress], shareDir, dataDir, listen: { host: '127.0.0.1', port: 0 }, ...opts });
    await daemon.start();
    let stopped = false;
    const peer: TestPeer = {
      name,
      daemon,
      shareDir,
      dataDir,
      call: (async (command: never, args: never, onEvent?: never) => {
        const c = await ControlClient.connect(daemon.socketPath);
        try {
          return await c.call(command, args, onEvent);
        } finally {
          c.close();
        }
      }) as ControlClient['call'],
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await daemon.close();
      },
    };
    this.peers.push(peer);
    return peer;
  }

  /** Writes `mib` MiB of random bytes to `file` (plus `extra` bytes so the last chunk is short). */
  static randomFile(file: string, mib: number, extra = 12345): void {
    const fd = fs.openSync(file, 'w');
    const block = Buffer.allocUnsafe(1024 * 1024);
    for (let i = 0; i < mib; i++) fs.writeSync(fd, randomFillSync(block));
    if (extra) fs.writeSync(fd, randomFillSync(Buffer.allocUnsafe(extra)));
    fs.closeSync(fd);
  }

  /** Shares a copy of `source` as `name` on each of `peers`, waits until `watcher` sees them all; returns the file id. */
  static async seed(peers: TestPeer[], source: string, name: string, watcher: TestPeer): Promise<string> {
    let id = '';
    for (const p of peers) {
      fs.copyFileSync(source, path.join(p.shareDir, name));
      const [f] = await p.call('share', { paths: [path.join(p.shareDir, name)] });
      id = f!.id;
    }
    await Fleet.held(watcher, name, peers.length);
    return id;
  }

  /** Waits until a search from `peer` shows `name` held by at least `n` peers. */
  static held(peer: TestPeer, name: string, n: number): Promise<number> {
    return until(`${name} on ${n} peers`, async () => {
      const hits = await peer.call('search', { text: name });
      const h = hits.find((x) => x.name === name);
      return h && h.peers >= n ? h.peers : undefined;
    }, 10_000, 50);
  }

  async close(): Promise<void> {
    for (const a of this.admins) a.close();
    for (const p of this.peers) await p.stop().catch(() => undefined);
    for (const tr of new Set([...this.trackers, this.tracker])) await tr?.close().catch(() => undefined);
    await closeMesh(this.proxies);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
