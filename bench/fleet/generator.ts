/**
 * The simulated fleet as the benchmark's parent sees it: the worker processes (bench/fleet/worker.ts,
 * forked, each owning a slice of the peers) and what they report, kept so that any window of the run can
 * be asked about afterwards: per peer, when each tracker last acknowledged its REGISTER and when its last
 * session with each tracker came up; every request's latency; heartbeats, lost sessions, event-loop delay.
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, memoryBytes } from '../harness.js';
import type { FromWorker, ToWorker, WorkerReport, WorkerSetup } from './ipc.js';
import type { WorkloadOptions } from './workload.js';

const WORKER_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker.js');
/** 10,000 sessions with 100 files each hold about a gigabyte; Node's default heap limit could be less. */
const WORKER_NODE_ARGS = ['--max-old-space-size=8192'];

export interface GeneratorOptions {
  workers: number;
  trackers: string[];
  peers: number;
  /** Identities kept for peers that join during churn. */
  spares: number;
  workload: WorkloadOptions;
  /** Where each worker's stderr goes (worker-N.log). */
  logDir: string;
  /** Peers per worker whose tracker session logs there. */
  peerLogs: number;
  productBlacklistCache: boolean;
  /** Node flags for the workers, after their own (--worker-node-args, e.g. to profile them). */
  nodeArgs?: string[];
  /** The workers' nice value (0: the same share of the CPU as the trackers). */
  nice?: number;
}

/** One sample: a lookup or a search and what it came to (see ipc.ts, WorkerReport.samples). */
export interface Sample {
  kind: number;
  at: number;
  ms: number;
  outcome: number;
  count: number;
}

/** A worker's report, kept whole for its counters (the per-peer arrays are folded in at once). */
type Counters = Omit<WorkerReport, 'sessions' | 'acks' | 'left' | 'joined' | 'samples'> & { worker: number };

class WorkerProcess {
  private waiting = new Map<string, { resolve: (v: FromWorker) => void; reject: (e: Error) => void }>();
  private failure: Error | undefined;

  constructor(
    readonly index: number,
    readonly child: ChildProcess,
    onReport: (r: WorkerReport) => void,
  ) {
    child.on('message', (msg: FromWorker) => {
      if (msg.t === 'report') return onReport(msg.report);
      if (msg.t === 'fatal') return this.fail(new Error(`worker ${index} failed: ${msg.message}`));
      const key = msg.t === 'done' ? `done:${msg.phase}` : msg.t;
      const w = this.waiting.get(key);
      this.waiting.delete(key);
      w?.resolve(msg);
    });
    child.once('exit', (code, signal) => this.fail(new Error(`worker ${index} exited (${signal ?? code})`)));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }

  get pid(): number {
    return this.child.pid!;
  }

  send(msg: ToWorker): void {
    if (this.failure) throw this.failure;
    this.child.send(msg);
  }

  /** Sends `msg` and waits for the answer `key` ('ready', 'flushed', 'done:connect'...). */
  ask<T extends FromWorker>(key: string, msg?: ToWorker): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const answer = new Promise<T>((resolve, reject) => this.waiting.set(key, { resolve: resolve as (v: FromWorker) => void, reject }));
    if (msg) this.child.send(msg);
    return answer;
  }

  stop(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  /** Asks the worker to exit (so that a --cpu-prof profile is written), killing it after `graceMs`. */
  async close(graceMs: number): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    try {
      this.child.send({ t: 'exit' });
    } catch {
      // already disconnected
    }
    const timer = setTimeout(() => this.stop(), graceMs);
    await exited;
    clearTimeout(timer);
  }
}

export class Generator {
  private readonly workers: WorkerProcess[] = [];
  /** ackAt[rank][peer]: when tracker `rank` last acknowledged a REGISTER of `peer` (0: never). */
  readonly ackAt: Float64Array[];
  /** sessionAt[rank][peer]: when `peer`'s last session with tracker `rank` came up (0: never). */
  readonly sessionAt: Float64Array[];
  /** Peers in the fleet now: started, and not left. */
  readonly live = new Set<number>();
  readonly samples: Sample[] = [];
  readonly counters: Counters[] = [];
  joined = 0;
  left = 0;

  private constructor(readonly opts: GeneratorOptions) {
    const total = opts.peers + opts.spares;
    this.ackAt = opts.trackers.map(() => new Float64Array(total));
    this.sessionAt = opts.trackers.map(() => new Float64Array(total));
  }

  /** Forks the workers, each loading its peers' identities and files; resolves when all are ready. */
  static async start(opts: GeneratorOptions): Promise<Generator> {
    const g = new Generator(opts);
    const per = Math.ceil(opts.peers / opts.workers);
    const sparePer = Math.ceil(opts.spares / opts.workers);
    const ready: Array<Promise<FromWorker>> = [];
    for (let w = 0; w < opts.workers; w++) {
      const first = Math.min(opts.peers, w * per);
      const count = Math.min(opts.peers, first + per) - first;
      const spareFirst = opts.peers + Math.min(opts.spares, w * sparePer);
      const spareCount = Math.min(opts.peers + opts.spares, spareFirst + sparePer) - spareFirst;
      const setup: WorkerSetup = { worker: w, trackers: opts.trackers, first, count, spareFirst, spareCount, workload: opts.workload, peerLogs: opts.peerLogs, productBlacklistCache: opts.productBlacklistCache };
      const log = fs.openSync(path.join(opts.logDir, `worker-${w}.log`), 'a');
      const execArgv = [...WORKER_NODE_ARGS, ...(opts.nodeArgs ?? [])];
      // Through nice(1), so that every thread of the worker runs at that niceness, not its main thread alone.
      const niced = (opts.nice ?? 0) > 0 ? { execPath: '/usr/bin/nice', execArgv: ['-n', String(opts.nice), process.execPath, ...execArgv] } : { execArgv };
      const child = fork(WORKER_SCRIPT, [JSON.stringify(setup)], { stdio: ['ignore', log, log, 'ipc'], ...niced });
      fs.closeSync(log);
      const wp = new WorkerProcess(w, child, (r) => g.ingest(w, r));
      g.workers.push(wp);
      ready.push(wp.ask('ready'));
      for (let p = first; p < first + count; p++) g.live.add(p);
    }
    try {
      await Promise.all(ready);
    } catch (err) {
      g.stop();
      throw err;
    }
    return g;
  }

  get pids(): number[] {
    return this.workers.map((w) => w.pid);
  }

  /** Resident memory of the workers now (not this process). */
  rssBytes(): number {
    return this.workers.reduce((s, w) => {
      try {
        return s + memoryBytes(w.pid, 'VmRSS');
      } catch {
        return s;
      }
    }, 0);
  }

  /** CPU seconds used so far by the workers (not this process). */
  cpuSeconds(): number {
    return this.workers.reduce((s, w) => {
      try {
        return s + cpuSeconds(w.pid);
      } catch {
        return s;
      }
    }, 0);
  }

  private ingest(worker: number, r: WorkerReport): void {
    for (let i = 0; i < r.sessions.length; i += 3) {
      const [peer, rank, at] = [r.sessions[i]!, r.sessions[i + 1]!, r.sessions[i + 2]!];
      if (rank >= 0) this.sessionAt[rank]![peer] = at;
    }
    for (let i = 0; i < r.acks.length; i += 3) {
      const [peer, rank, at] = [r.acks[i]!, r.acks[i + 1]!, r.acks[i + 2]!];
      if (rank >= 0) this.ackAt[rank]![peer] = Math.max(this.ackAt[rank]![peer]!, at);
    }
    for (let i = 0; i < r.left.length; i += 2) {
      this.live.delete(r.left[i]!);
      this.left++;
    }
    for (let i = 0; i < r.joined.length; i += 2) {
      this.live.add(r.joined[i]!);
      this.joined++;
    }
    for (let i = 0; i < r.samples.length; i += 5) {
      this.samples.push({ kind: r.samples[i]!, at: r.samples[i + 1]!, ms: r.samples[i + 2]!, outcome: r.samples[i + 3]!, count: r.samples[i + 4]! });
    }
    const { sessions: _s, acks: _a, left: _l, joined: _j, samples: _x, ...counters } = r;
    this.counters.push({ ...counters, worker });
  }

  private all<T extends FromWorker>(key: string, msg: ToWorker): Promise<T[]> {
    return Promise.all(this.workers.map((w) => w.ask<T>(key, msg)));
  }

  /** Starts every peer with no files, `window` connecting at a time in each worker; resolves when all have a session. */
  async connect(window: number): Promise<void> {
    await this.all('done:connect', { t: 'connect', window });
  }

  /** Every peer announces its files, `window` at a time in each worker; resolves with the peers that could not. */
  async register(window: number): Promise<number> {
    const done = await this.all<Extract<FromWorker, { t: 'done' }>>('done:register', { t: 'register', window });
    return done.reduce((s, d) => s + d.failures, 0);
  }

  /** Fleet-wide rates, split evenly over the workers. */
  load(lookupsPerSec: number, searchesPerSec: number, searchLimit: number): void {
    const n = this.workers.length;
    for (const w of this.workers) w.send({ t: 'load', lookupsPerSec: lookupsPerSec / n, searchesPerSec: searchesPerSec / n, searchLimit });
  }

  churn(peersPerSec: number): void {
    for (const w of this.workers) w.send({ t: 'churn', peersPerSec: peersPerSec / this.workers.length });
  }

  /** Waits until every worker has reported everything seen so far. */
  async flush(): Promise<void> {
    await this.all('flushed', { t: 'flush' });
  }

  /** The peers in the fleet by `TRACKER ROLE STATE` of their session now (TRACKER: an address of `names`' order mapped to its name). */
  async whereabouts(names: string[]): Promise<Record<string, number>> {
    const answers = await this.all<Extract<FromWorker, { t: 'whereabouts' }>>('whereabouts', { t: 'whereabouts' });
    const out: Record<string, number> = {};
    for (const a of answers) {
      for (const [key, n] of Object.entries(a.counts)) {
        const [address, ...rest] = key.split(' ');
        const i = this.opts.trackers.indexOf(address!);
        const named = [i >= 0 ? names[i]! : address!, ...rest].join(' ');
        out[named] = (out[named] ?? 0) + n;
      }
    }
    return out;
  }

  /**
   * Of the peers in the fleet now, how many have had a REGISTER acknowledged by tracker `rank` since
   * `since`, and when the last of those acknowledgements came.
   */
  registeredWith(rank: number, since: number): { count: number; lastAt: number } {
    let count = 0;
    let lastAt = 0;
    for (const p of this.live) {
      const t = this.ackAt[rank]![p]!;
      if (t < since) continue;
      count++;
      if (t > lastAt) lastAt = t;
    }
    return { count, lastAt };
  }

  /**
   * The same for sessions: the peers whose latest session is with tracker `rank` and came up since
   * `since` (a peer that passed through `rank` and moved on does not count), and when the last came up.
   */
  sessionsWith(rank: number, since: number): { count: number; lastAt: number } {
    let count = 0;
    let lastAt = 0;
    for (const p of this.live) {
      const t = this.sessionAt[rank]![p]!;
      if (t < since || this.sessionAt.some((other) => other[p]! > t)) continue;
      count++;
      if (t > lastAt) lastAt = t;
    }
    return { count, lastAt };
  }

  /**
   * The peers in the fleet with no REGISTER acknowledged by tracker `rank` since `since`, counted by the
   * tracker of their latest session ('none': no session since `since`): where the stragglers are.
   */
  stragglers(rank: number, since: number, names: string[]): { byTracker: Record<string, number>; examples: number[] } {
    const out: Record<string, number> = {};
    const examples: number[] = [];
    for (const p of this.live) {
      if (this.ackAt[rank]![p]! >= since) continue;
      if (examples.length < 5) examples.push(p);
      let latest = -1;
      for (let r = 0; r < this.sessionAt.length; r++) if (this.sessionAt[r]![p]! >= since && (latest < 0 || this.sessionAt[r]![p]! > this.sessionAt[latest]![p]!)) latest = r;
      const key = latest < 0 ? 'none' : names[latest]!;
      out[key] = (out[key] ?? 0) + 1;
    }
    return { byTracker: out, examples };
  }

  samplesBetween(kind: number, from: number, to: number): Sample[] {
    return this.samples.filter((s) => s.kind === kind && s.at >= from && s.at <= to);
  }

  countersBetween(from: number, to: number): Counters[] {
    return this.counters.filter((c) => c.at >= from && c.at <= to);
  }

  stop(): void {
    for (const w of this.workers) w.stop();
  }

  /** Stops the workers by asking them to exit, as --worker-node-args profiles need (then as stop() does). */
  async close(graceMs = 5000): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close(graceMs)));
  }
}
