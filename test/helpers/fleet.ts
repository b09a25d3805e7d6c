/**
 * A fleet for integration tests: a real Tracker and real PeerDaemons (the same classes the programs
 * run), on 127.0.0.1 with ports from listen(0), in a temporary folder that is removed afterwards.
 */
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Tracker, type TrackerOptions } from '../../daemon/tracker.js';
import { ControlClient, PeerDaemon, type PeerDaemonOptions } from '../../peerd/index.js';
import type { Address } from '../../protocol/index.js';
import { reservePorts, until } from './wait.js';
import type { Tap } from './tap.js';


export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface TestPeer {
  name: string;
  daemon: PeerDaemon;
  shareDir: string;
  dataDir: string;
  /** Runs one control command against this peer, as `p2p` would. */
  call: ControlClient['call'];
  stop(): Promise<void>;
}

export class Fleet {
  readonly dir: string;
  tracker!: Tracker;
  trackerAddress!: Address;
  /** Every tracker started by startCluster, in rank order. */
  readonly trackers: Tracker[] = [];
  readonly peers: TestPeer[] = [];

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
   * `n` trackers of one cluster in this process, in rank order; `tracker` is the first, and this resolves
   * once it is the main and the others its backups.
   */
  async startCluster(n: number, opts: Partial<TrackerOptions> = {}): Promise<Tracker[]> {
    const cluster = (await reservePorts(n)).map((port) => ({ host: '127.0.0.1', port }));
    const trackers = cluster.map((listen, i) => new Tracker({ listen, cluster, dataDir: path.join(this.dir, `tracker${i}`), adminToken: ADMIN_TOKEN, ...opts }));
    this.trackers.push(...trackers);
    for (const tr of trackers) await tr.listen();
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

  /** Waits until a search from `peer` shows `name` held by at least `n` peers. */
  static held(peer: TestPeer, name: string, n: number): Promise<number> {
    return until(`${name} on ${n} peers`, async () => {
      const hits = await peer.call('search', { text: name });
      const h = hits.find((x) => x.name === name);
      return h && h.peers >= n ? h.peers : undefined;
    }, 10_000, 50);
  }

  async close(): Promise<void> {
    for (const p of this.peers) await p.stop().catch(() => undefined);
    for (const tr of new Set([...this.trackers, this.tracker])) await tr?.close().catch(() => undefined);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
