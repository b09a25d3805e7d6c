/**
 * The tracker cluster under test: three real `p2p-tracker` processes (test/helpers/tracker-process.ts's
 * TrackerProcess, started as processes of the benchmark's Workspace as bench/takeover.ts does), each with
 * --metrics, and limits raised for a fleet on one address. What the benchmark reads from them: /proc
 * (RSS, CPU), their metrics, and a probe that asks one of them a LOOKUP on a fresh peer connection.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { clientHandshake } from '../../peerd/handshake.js';
import { dial, generateKeyPair, parseAddress, RemoteError, tlsIdentity, type TlsIdentity } from '../../protocol/index.js';
import { parsePrometheusText, sampleValue, scrape, type Family } from '../../test/helpers/prometheus.js';
import { TrackerProcess } from '../../test/helpers/tracker-process.js';
import { reservePorts } from '../../test/helpers/wait.js';
import { cpuSeconds, memoryBytes, until, type Started, type Workspace } from '../harness.js';

export interface ClusterOptions {
  size: number;
  /** Connections each tracker must take: every peer may hold two for a moment while it fails over. */
  maxConnections: number;
  heartbeatMs: number | undefined;
  failoverMs: number | undefined;
  leaseMs: number | undefined;
  peerHeartbeatsPerS: number | undefined;
  /** Node flags for the tracker processes (a profile: `--cpu-prof --cpu-prof-dir=DIR`). */
  nodeArgs: string[];
}

export type Metrics = Map<string, Family>;

/**
 * Probes waiting for an answer from one tracker: a busy tracker is then asked less often (each probe
 * costs it a TLS handshake), not more.
 */
const MAX_PROBES_OUTSTANDING = 2;

/** What a probe saw: when the tracker answered HELLO (and as what), and when it answered the LOOKUP. */
export interface ProbeResult {
  role: string;
  welcomedAt: number;
  answeredAt: number | undefined;
}

export class FleetCluster {
  /** The process of each tracker's last start (its log is in the workspace). */
  private readonly launched = new Map<string, Started>();
  private readonly probeIdentity: TlsIdentity;

  private constructor(
    private readonly ws: Workspace,
    readonly trackers: TrackerProcess[],
    readonly metricsPorts: number[],
  ) {
    this.probeIdentity = tlsIdentity(generateKeyPair().keys);
  }

  static async start(ws: Workspace, label: string, opts: ClusterOptions): Promise<FleetCluster> {
    const ports = await reservePorts(opts.size * 2);
    const listen = ports.slice(0, opts.size);
    const metricsPorts = ports.slice(opts.size);
    const cluster = listen.map((p) => `127.0.0.1:${p}`);
    const token = randomBytes(18).toString('hex');
    const tokenFile = ws.path(`${label}-admin-token`);
    fs.writeFileSync(tokenFile, token, { mode: 0o600 });
    const trackers: TrackerProcess[] = [];
    const fleet = new FleetCluster(ws, trackers, metricsPorts);
    for (let i = 0; i < opts.size; i++) {
      const name = `${label}-t${i}`;
      const dataDir = await ws.mkdir(name);
      const launch = (args: string[]): ChildProcess => {
        const started = ws.start(name, args[0]!, args.slice(1), { commandArgs: opts.nodeArgs });
        fleet.launched.set(name, started);
        return started.child;
      };
      // The peers come from 253 addresses (worker.ts, sourceAddress), within the default per-address limit;
      // only the total is raised to the fleet's.
      const extraArgs = ['--metrics', `127.0.0.1:${metricsPorts[i]}`, '--max-connections', String(opts.maxConnections)];
      if (opts.leaseMs !== undefined) extraArgs.push('--lease-ms', String(opts.leaseMs));
      if (opts.peerHeartbeatsPerS !== undefined) extraArgs.push('--peer-heartbeats-per-s', String(opts.peerHeartbeatsPerS));
      trackers.push(
        new TrackerProcess({
          name,
          port: listen[i]!,
          cluster,
          dataDir,
          tokenFile,
          token,
          ...(opts.heartbeatMs !== undefined ? { heartbeatMs: opts.heartbeatMs } : {}),
          ...(opts.failoverMs !== undefined ? { failoverMs: opts.failoverMs } : {}),
          extraArgs,
          launch,
        }),
      );
    }
    for (const t of trackers) t.start();
    await until('rank 0 main and the others its in-sync backups', () => fleet.chainInCommand().catch(() => undefined), 30_000, 50).catch((err: Error) => {
      throw new Error(`${err.message}\n${fleet.tails()}`);
    });
    return fleet;
  }

  get addresses(): string[] {
    return this.trackers.map((t) => t.address);
  }

  /** Rank 0 is main and every other tracker its backup in its term (admin status: cheap only while the state is small). */
  private async chainInCommand(): Promise<true | undefined> {
    const rows = await Promise.all(this.trackers.map((t) => t.admin.self()));
    const main = rows[0]!;
    if (main.role !== 'primary') return undefined;
    return rows.slice(1).every((r) => r.role === 'backup' && r.term === main.term && r.hash === main.hash) ? true : undefined;
  }

  /** Each tracker's state hash (admin status: at 20,000 peers it takes the tracker a moment). */
  async hashes(): Promise<string[]> {
    return Promise.all(this.trackers.map(async (t) => (await t.admin.self()).hash));
  }

  pid(rank: number): number | undefined {
    const t = this.trackers[rank]!;
    return t.running ? t.proc?.pid : undefined;
  }

  /** Resident memory and CPU seconds so far of each tracker (undefined while down). */
  usage(): Array<{ rssBytes: number; cpuSeconds: number } | undefined> {
    return this.trackers.map((_, rank) => {
      const pid = this.pid(rank);
      if (pid === undefined) return undefined;
      try {
        return { rssBytes: memoryBytes(pid, 'VmRSS'), cpuSeconds: cpuSeconds(pid) };
      } catch {
        return undefined;
      }
    });
  }

  async metrics(rank: number): Promise<Metrics> {
    const res = await scrape({ host: '127.0.0.1', port: this.metricsPorts[rank]! });
    if (res.status !== 200) throw new Error(`metrics of ${this.trackers[rank]!.name}: HTTP ${res.status}`);
    // prom-client writes a NaN value as `Nan` (the event-loop lag before its first sample), which the strict parser refuses.
    return parsePrometheusText(res.body.replace(/ Nan$/gm, ' NaN'));
  }

  /** A fresh peer session with tracker `rank` (its own identity, no files): HELLO, then a LOOKUP of `fileId` if it says it is main. */
  async probe(rank: number, fileId: Buffer, timeoutMs = 2000): Promise<ProbeResult> {
    const conn = await dial(parseAddress(this.trackers[rank]!.address), {
      connectTimeoutMs: timeoutMs,
      requestTimeoutMs: timeoutMs,
      tls: { identity: this.probeIdentity, verify: () => undefined },
    });
    try {
      const welcome = await clientHandshake(conn, 0, timeoutMs);
      const welcomedAt = performance.timeOrigin + performance.now();
      if (welcome.role !== 'primary') return { role: welcome.role, welcomedAt, answeredAt: undefined };
      // "No peer holds that file" is an answer too: the main is serving reads.
      await conn.request('LOOKUP', { id: fileId }, 'LOOKUP_RESULT', { timeoutMs }).catch((err: unknown) => {
        if (!(err instanceof RemoteError && err.code === 'P2P_NOT_FOUND')) throw err;
      });
      return { role: welcome.role, welcomedAt, answeredAt: performance.timeOrigin + performance.now() };
    } finally {
      conn.close();
    }
  }

  /** Starts probing `ranks` (see MainWatch). */
  watchMain(ranks: number[], fileId: Buffer, everyMs: number): MainWatch {
    return new MainWatch(this, ranks, fileId, everyMs);
  }

  tails(lines = 10): string {
    return this.trackers.map((t) => `--- ${t.name}:\n${this.launched.has(t.name) ? this.ws.tail(this.launched.get(t.name)!, lines) : ''}`).join('\n');
  }

  async stop(): Promise<void> {
    await Promise.all(this.trackers.map((t) => t.stop()));
  }
}

/** When a tracker became main for its latest spell as main, as the probes saw it, and first answered a LOOKUP in it. */
export interface MainSpell {
  rank: number;
  mainAt: number;
  answeredAt: number | undefined;
}

/**
 * Probes every tracker of `ranks` on a fresh peer connection every `everyMs` (at most MAX_PROBES_OUTSTANDING
 * each), and keeps what they said: the first LOOKUP any of them answered as main, and each tracker's
 * latest spell as main. After a kill, two backups may both be main for a moment in turn (a tracker of a
 * better rank takes command from the first one elected): the first answer says when reads came back, the
 * spell of the main that stays says when it took command.
 */
export class MainWatch {
  /** The first LOOKUP answered by a main, whichever. */
  first: MainSpell | undefined;
  /** Spells as main the probes saw begin after the first (0 for a clean takeover). */
  changes = 0;
  private spellsSeen = 0;
  private readonly spells = new Map<number, MainSpell>();
  private readonly outstanding = new Map<number, number>();
  private stopped = false;
  private readonly timer: NodeJS.Timeout;
  private readonly waiters = new Set<() => void>();

  constructor(
    private readonly cluster: FleetCluster,
    private readonly ranks: number[],
    private readonly fileId: Buffer,
    everyMs: number,
  ) {
    for (const r of ranks) this.outstanding.set(r, 0);
    this.timer = setInterval(() => this.round(), everyMs);
    this.round();
  }

  private round(): void {
    for (const rank of this.ranks) {
      if (this.outstanding.get(rank)! >= MAX_PROBES_OUTSTANDING || this.cluster.pid(rank) === undefined) continue;
      this.outstanding.set(rank, this.outstanding.get(rank)! + 1);
      this.cluster
        .probe(rank, this.fileId)
        .then((r) => this.saw(rank, r))
        .catch(() => undefined)
        .finally(() => this.outstanding.set(rank, this.outstanding.get(rank)! - 1));
    }
  }

  private saw(rank: number, r: ProbeResult): void {
    if (r.role !== 'primary') {
      this.spells.delete(rank);
      return;
    }
    let spell = this.spells.get(rank);
    if (!spell) {
      // A new spell as main (of another tracker, or of the same one after it lost command).
      if (this.spellsSeen++ > 0) this.changes++;
      spell = { rank, mainAt: r.welcomedAt, answeredAt: undefined };
    }
    spell.answeredAt ??= r.answeredAt;
    this.spells.set(rank, spell);
    if (r.answeredAt !== undefined) this.first ??= { ...spell };
    for (const w of [...this.waiters]) w();
  }

  /** The latest spell of tracker `rank` as main (undefined: the probes do not see it as main now). */
  spell(rank: number): MainSpell | undefined {
    return this.spells.get(rank);
  }

  /** Resolves once some main has answered a LOOKUP, or after `timeoutMs` (undefined). */
  firstAnswer(timeoutMs: number): Promise<MainSpell | undefined> {
    if (this.first) return Promise.resolve(this.first);
    return new Promise((resolve) => {
      const done = (): void => {
        if (!this.first && !this.stopped && performance.now() < deadline) return;
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve(this.first);
      };
      const deadline = performance.now() + timeoutMs;
      const timer = setTimeout(done, timeoutMs);
      this.waiters.add(done);
    });
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    for (const w of [...this.waiters]) w();
  }
}

/** A gauge's value (undefined if the tracker does not show it). */
export function gauge(m: Metrics, name: string, labels: Record<string, string> = {}): number | undefined {
  try {
    return sampleValue(m, name, labels);
  } catch {
    return undefined;
  }
}

/** The largest backup lag the main shows (entries of its log some backup has not applied). */
export function maxBackupLag(m: Metrics): number {
  const family = m.get('p2p_tracker_backup_lag_entries');
  return Math.max(0, ...(family?.samples ?? []).map((s) => s.value));
}

/** A histogram's cumulative buckets (le -> count), its sum and its count. */
export interface Histogram {
  buckets: Array<{ le: number; count: number }>;
  sum: number;
  count: number;
}

/** A histogram of the scrape, or the one series of it whose labels include `labels` (the le label aside). */
export function histogram(m: Metrics, name: string, labels: Record<string, string> = {}): Histogram {
  const family = m.get(name);
  const samples = (family?.samples ?? []).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  const buckets = samples
    .filter((s) => s.name === `${name}_bucket`)
    .map((s) => ({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), count: s.value }))
    .sort((a, b) => a.le - b.le);
  const value = (suffix: string): number => samples.find((s) => s.name === `${name}_${suffix}`)?.value ?? 0;
  return { buckets, sum: value('sum'), count: value('count') };
}

/**
 * The q-quantile (0..1) of what a histogram counted between two scrapes, in its unit: the upper bound of
 * the bucket it falls in (Prometheus would interpolate; a bound is honest about the resolution).
 */
export function quantileBetween(before: Histogram, after: Histogram, q: number): number {
  const total = after.count - before.count;
  if (total <= 0) return NaN;
  const prior = new Map(before.buckets.map((b) => [b.le, b.count]));
  for (const b of after.buckets) {
    if (b.count - (prior.get(b.le) ?? 0) >= q * total) return b.le;
  }
  return Infinity;
}
