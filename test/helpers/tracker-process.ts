/**
 * Real `p2p-tracker` processes for integration tests (dist/daemon/main.js, so `npm run build` first), and
 * the faults a cluster of them is put through: kill -9, SIGSTOP/SIGCONT, a graceful stop, a wiped
 * --data, and partitions and slow links made by TCP proxies placed between the trackers.
 *
 * `--cluster` is positional (a tracker's rank is the place of its own --listen in the list), so each
 * tracker can be given its own list: its own entry is its real address, the others' entries are the
 * proxies through which it reaches them. The trackers' ports are
 * reserved (bound, then freed: reservePorts) before anything starts; the proxies (relay.ts) listen on port 0, never on one of them.
 * Nothing here imports tap: the takeover benchmark runs its trackers with TrackerProcess too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AdminClient } from '../../cli/admin.js';
import { toP2PError, type Body } from '../../protocol/index.js';
import { closeMesh, proxyMesh, setLinks, type ProxyMesh, type ProxyMode } from './relay.js';
import { reservePorts, until } from './wait.js';
import { PROGRAMS, programCommand } from './programs.js';
import { repoPath } from './root.js';

/** What a cluster needs of a tap test (or of anything that ends): a place to register its cleanup. */
export interface Scope {
  teardown(fn: () => unknown): void;
}

export type StatusRow = Body<'ADMIN_STATUS_RESULT'>['trackers'][number];

export const TRACKER_BIN = repoPath(PROGRAMS['p2p-tracker']);

const label = (port: number): string => `127.0.0.1:${port}`;
const errorCode = (err: unknown): string => (err instanceof TestTimeoutError ? TEST_TIMEOUT : toP2PError(err).code);

/** What became of an admin write: acknowledged, or refused/failed with a code (`TEST_TIMEOUT`: no answer in time). */
export type WriteOutcome = { ok: true; ms: number } | { ok: false; code: string; message: string; ms: number };

/** A code that is not the tracker's: the test gave up waiting for the answer. */
export const TEST_TIMEOUT = 'TEST_TIMEOUT';

class TestTimeoutError extends Error {}

/** `p`, or a TestTimeoutError after `ms` (the test stops waiting; the tracker may still answer later). */
async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const gaveUp = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TestTimeoutError(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, gaveUp]);
  } finally {
    clearTimeout(timer);
  }
}

/** What became of a batch of admin writes (see `TrackerAdmin.addMany`). */
export interface BatchOutcome {
  acked: string[];
  /** Writes that failed or were not answered: they may or may not be kept. */
  unknown: Array<{ target: string; code: string }>;
  ms: number;
}

/**
 * Admin commands to one tracker. Reads share one session (reopened after a failure); every write opens
 * its own, so a write left hanging (a main waiting for frozen backups) never holds up a read.
 */
export class TrackerAdmin {
  private session: AdminClient | undefined;
  private readonly writers = new Set<AdminClient>();

  constructor(
    readonly address: string,
    private readonly token: string,
  ) {}

  /**
   * Runs `fn` on the shared session (opened on first use, reopened after any failure): the reads below,
   * and writes that should not pay a handshake each (a writer loop, a benchmark's burst) and that throw
   * when refused, unlike add and remove.
   */
  async withSession<T>(fn: (c: AdminClient) => Promise<T>): Promise<T> {
    this.session ??= await AdminClient.connect(this.address, this.token);
    const c = this.session;
    try {
      return await fn(c);
    } catch (err) {
      // Whatever went wrong (the tracker died, or closed the session as idle after 10 s), the next read
      // opens a new session: a read has no state worth keeping.
      c.close();
      if (this.session === c) this.session = undefined;
      throw err;
    }
  }

  /** Every tracker's row of `admin status`, as this tracker sees them. */
  status(): Promise<StatusRow[]> {
    return this.withSession(async (c) => (await c.status()).trackers);
  }

  /** This tracker's own row (its role, term, seq, state hash). */
  async self(): Promise<StatusRow> {
    const row = (await this.status()).find((r) => r.address === this.address);
    if (!row) throw new Error(`${this.address} does not list itself in admin status`);
    return row;
  }

  /** `blacklist ls`: the targets, sorted. */
  async blacklist(): Promise<string[]> {
    return this.withSession(async (c) => (await c.blacklist()).entries.map((e) => e.target).sort());
  }

  add(target: string, reason = 'test', timeoutMs = 4000): Promise<WriteOutcome> {
    return this.write((c) => c.add(target, reason), timeoutMs);
  }

  remove(target: string, timeoutMs = 4000): Promise<WriteOutcome> {
    return this.write((c) => c.remove(target), timeoutMs);
  }

  /**
   * Bans every target, `sessions` writes at a time, over sessions that are reused (not a handshake per
   * write): for a large blacklist. Never rejects; a write that fails or times out is listed as unknown.
   */
  async addMany(targets: string[], reason: string, { sessions = 8, timeoutMs = 5000 } = {}): Promise<BatchOutcome> {
    const started = Date.now();
    const out: BatchOutcome = { acked: [], unknown: [], ms: 0 };
    let next = 0;
    const worker = async (): Promise<void> => {
      let c: AdminClient | undefined;
      try {
        while (next < targets.length) {
          const target = targets[next++]!;
          try {
            if (!c) {
              c = await AdminClient.connect(this.address, this.token);
              this.writers.add(c);
            }
            await withTimeout(c.add(target, reason), timeoutMs);
            out.acked.push(target);
          } catch (err) {
            out.unknown.push({ target, code: errorCode(err) });
            c?.close();
            if (c) this.writers.delete(c);
            c = undefined;
          }
        }
      } finally {
        c?.close();
        if (c) this.writers.delete(c);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, sessions) }, worker));
    out.ms = Date.now() - started;
    return out;
  }

  /** One write on a session of its own; never rejects: a refusal is an outcome. */
  private async write(fn: (c: AdminClient) => Promise<unknown>, timeoutMs: number): Promise<WriteOutcome> {
    const started = Date.now();
    const failed = (err: unknown): WriteOutcome => ({ ok: false, code: errorCode(err), message: toP2PError(err).message, ms: Date.now() - started });
    let c: AdminClient;
    try {
      c = await AdminClient.connect(this.address, this.token);
    } catch (err) {
      return failed(err);
    }
    this.writers.add(c);
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<WriteOutcome>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, code: TEST_TIMEOUT, message: `no answer within ${timeoutMs} ms`, ms: Date.now() - started }), timeoutMs);
    });
    const answered = fn(c).then((): WriteOutcome => ({ ok: true, ms: Date.now() - started }), failed);
    try {
      return await Promise.race([answered, gaveUp]);
    } finally {
      clearTimeout(timer);
      c.close();
      this.writers.delete(c);
    }
  }

  close(): void {
    this.session?.close();
    this.session = undefined;
    for (const c of this.writers) c.close();
    this.writers.clear();
  }
}

export interface TrackerProcessOptions {
  name: string;
  /** Its --listen port, on 127.0.0.1. */
  port: number;
  /** Its --cluster list, in rank order; its own entry must be its --listen address. A list of one: a lone tracker, no --cluster. */
  cluster: string[];
  dataDir: string;
  tokenFile: string;
  token: string;
  /** Its --heartbeat-ms and --failover-ms; the tracker's defaults where not given. */
  heartbeatMs?: number;
  failoverMs?: number;
  extraArgs?: string[];
  /**
   * Starts the process from its arguments (after `node`): by default a child of this process whose stderr
   * is kept in `log`. The benchmarks start it in their Workspace instead (stderr to a file, stopped at cleanup).
   */
  launch?: (args: string[]) => ChildProcess;
}

/** One real p2p-tracker process, started and faulted at will; its stderr (JSON log lines) is kept. */
export class TrackerProcess {
  proc: ChildProcess | undefined;
  /** Everything it wrote on stderr, over every start. */
  log = '';
  readonly admin: TrackerAdmin;
  private paused = false;

  constructor(readonly opts: TrackerProcessOptions) {
    this.admin = new TrackerAdmin(this.address, opts.token);
  }

  get name(): string {
    return this.opts.name;
  }

  get port(): number {
    return this.opts.port;
  }

  get address(): string {
    return label(this.opts.port);
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get isPaused(): boolean {
    return this.running && this.paused;
  }

  start(): void {
    if (this.running) throw new Error(`${this.name} is already running`);
    const o = this.opts;
    const args = [TRACKER_BIN, '--listen', this.address, ...(o.cluster.length > 1 ? ['--cluster', o.cluster.join(',')] : []), '--data', o.dataDir, '--admin-token-file', o.tokenFile];
    if (o.heartbeatMs !== undefined) args.push('--heartbeat-ms', String(o.heartbeatMs));
    if (o.failoverMs !== undefined) args.push('--failover-ms', String(o.failoverMs));
    args.push('--log-level', 'info', ...(o.extraArgs ?? []));
    const program = programCommand(args[0]!, args.slice(1));
    const proc = o.launch ? o.launch(args) : spawn(program.command, program.args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.log += `--- ${this.name} started (pid ${proc.pid}) ---\n`;
    proc.stderr?.setEncoding('utf8').on('data', (d: string) => (this.log += d));
    proc.once('exit', (code, signal) => (this.log += `--- ${this.name} exited (${signal ?? code}) ---\n`));
    this.proc = proc;
    this.paused = false;
  }

  /** kill -9 (a paused process is woken first so that it dies at once). */
  async kill9(): Promise<void> {
    this.admin.close();
    const proc = this.proc;
    this.proc = undefined;
    this.paused = false;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGCONT');
    proc.kill('SIGKILL');
    await exited;
  }

  /** SIGSTOP: the process freezes, its sockets stay open. */
  pause(): void {
    if (!this.running) throw new Error(`${this.name} is not running`);
    this.proc!.kill('SIGSTOP');
    this.paused = true;
  }

  /** SIGCONT. */
  resume(): void {
    if (!this.running) return;
    this.proc!.kill('SIGCONT');
    this.paused = false;
  }

  /** SIGTERM and wait for the exit (kill -9 after `timeoutMs`); resolves with the exit code. */
  async stop(timeoutMs = 5000): Promise<number | null> {
    this.admin.close();
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
      this.proc = undefined;
      return proc?.exitCode ?? null;
    }
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    if (this.paused) proc.kill('SIGCONT');
    this.paused = false;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    const code = await exited;
    clearTimeout(timer);
    this.proc = undefined;
    return code;
  }

  /**
   * Removes its --data folder (the tracker must be down): it comes back as a fresh tracker. Its identity
   * key stays, as an operator restores it from where keys are provisioned: with a new key, the others
   * would refuse it as an impostor until it is pinned anew (README, "Identities").
   */
  wipeData(): void {
    if (this.running) throw new Error(`wipe the data of ${this.name} only while it is down`);
    const keep = ['identity.key', 'identity.crt'].flatMap((f) => {
      const p = path.join(this.opts.dataDir, f);
      return fs.existsSync(p) ? [[f, fs.readFileSync(p)] as const] : [];
    });
    fs.rmSync(this.opts.dataDir, { recursive: true, force: true });
    fs.mkdirSync(this.opts.dataDir, { recursive: true, mode: 0o700 });
    for (const [f, bytes] of keep) fs.writeFileSync(path.join(this.opts.dataDir, f), bytes, { mode: 0o600 });
  }

  /** Its own row of admin status, or undefined if it is down or does not answer. */
  async selfStatus(): Promise<StatusRow | undefined> {
    if (!this.running || this.paused) return undefined;
    return this.admin.self().catch(() => undefined);
  }

  /** Role changes it logged, in order. */
  roleChanges(): Array<{ from: string; to: string; term: number }> {
    return this.log
      .split('\n')
      .filter((l) => l.includes('"tracker role'))
      .map((l) => JSON.parse(l) as { from: string; to: string; term: number });
  }

  /** The last `n` lines of its log, for a failure's comment. */
  tail(n = 15): string {
    return this.log.trimEnd().split('\n').slice(-n).join('\n');
  }
}

export interface TrackerClusterOptions {
  size: number;
  /** The trackers' --heartbeat-ms and --failover-ms; their defaults where not given. */
  heartbeatMs?: number;
  failoverMs?: number;
  /** Put a proxy on every link between two trackers, so that partitions can be made. */
  proxies?: boolean;
  extraArgs?: string[];
}

/** One main among the trackers asked, and what each of them said. */
export interface MainSighting {
  main: TrackerProcess;
  rows: Map<TrackerProcess, StatusRow>;
}

/** N tracker processes of one cluster in a temporary folder, removed (processes and all) at teardown. */
export class TrackerCluster {
  readonly trackers: TrackerProcess[];
  /** proxies[i][j]: how tracker i reaches tracker j (only with `proxies`). */
  proxies: ProxyMesh = [];
  readonly token = randomBytes(18).toString('hex');

  private constructor(
    readonly dir: string,
    readonly ports: number[],
    readonly opts: TrackerClusterOptions,
  ) {
    this.trackers = [];
  }

  static async create(t: Scope, opts: TrackerClusterOptions): Promise<TrackerCluster> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-faults-'));
    const c = new TrackerCluster(dir, await reservePorts(opts.size), opts);
    t.teardown(() => c.close());
    await c.setUp();
    return c;
  }

  private async setUp(): Promise<void> {
    const { opts, ports, dir } = this;
    const tokenFile = path.join(dir, 'admin-token');
    fs.writeFileSync(tokenFile, this.token, { mode: 0o600 });
    if (opts.proxies) this.proxies = await proxyMesh(ports);
    for (let i = 0; i < ports.length; i++) {
      const cluster = ports.map((port, j) => (j === i || !opts.proxies ? label(port) : this.proxies[i]![j]!.address));
      this.trackers.push(
        new TrackerProcess({
          name: `t${i}`,
          port: ports[i]!,
          cluster,
          dataDir: path.join(dir, `t${i}`),
          tokenFile,
          token: this.token,
          ...(opts.heartbeatMs !== undefined ? { heartbeatMs: opts.heartbeatMs } : {}),
          ...(opts.failoverMs !== undefined ? { failoverMs: opts.failoverMs } : {}),
          ...(opts.extraArgs ? { extraArgs: opts.extraArgs } : {}),
        }),
      );
    }
  }

  /** Cuts (drop, stall) or heals (pass) every link between tracker i and each of `others`, both ways. */
  link(i: number, others: number[], mode: ProxyMode): void {
    if (!this.opts.proxies) throw new Error('this cluster was made without proxies');
    setLinks(this.proxies, i, others, mode);
  }

  /**
   * Slows to `bytesPerSec` (each way) or, with undefined, frees the connections tracker `from` opens to
   * tracker `to`: what `from` sends on them and what comes back on them (answers to its requests).
   */
  throttle(from: number, to: number, bytesPerSec: number | undefined): void {
    if (!this.opts.proxies) throw new Error('this cluster was made without proxies');
    this.proxies[from]![to]!.throttle(bytesPerSec);
  }

  /**
   * Cuts (drop, stall) or heals (pass) only the connections tracker `from` opens to tracker `to`; those
   * `to` opens to `from` are untouched (one direction of a partition, as when one TCP connection is reset).
   */
  oneWay(from: number, to: number, mode: ProxyMode): void {
    if (!this.opts.proxies) throw new Error('this cluster was made without proxies');
    this.proxies[from]![to]!.set(mode);
  }

  /** What every tracker in `list` says of itself (undefined: down, paused or not answering). */
  async sight(list: TrackerProcess[] = this.trackers): Promise<Map<TrackerProcess, StatusRow | undefined>> {
    const rows = await Promise.all(list.map((tr) => tr.selfStatus()));
    return new Map(list.map((tr, i) => [tr, rows[i]]));
  }

  /** One line per tracker: role and term, or why it did not answer. */
  describe(seen: Map<TrackerProcess, StatusRow | undefined>): string {
    return [...seen].map(([tr, r]) => `${tr.name}: ${!tr.running ? 'down' : tr.isPaused ? 'paused' : r ? `${r.role} term ${r.term} seq ${r.seq}` : 'no answer'}`).join('; ');
  }

  /**
   * Waits until exactly one of `among` says it is the main, every one of them answering; with `stableMs`,
   * the same tracker must stay the only main, in the same term, for that long (no livelock, no flapping).
   * Fails after `deadlineMs`, saying what each tracker said last.
   */
  async oneMain(among: TrackerProcess[] = this.trackers, { deadlineMs = 5000, stableMs = 0 } = {}): Promise<MainSighting> {
    let since: { main: TrackerProcess; term: number; at: number } | undefined;
    let last = new Map<TrackerProcess, StatusRow | undefined>();
    const what = `single main among ${among.map((tr) => tr.name).join(', ')}`;
    try {
      return await until(what, async () => {
        last = await this.sight(among);
        const rows = [...last.values()];
        const mains = [...last].filter(([, r]) => r?.role === 'primary');
        if (!rows.every((r) => r) || mains.length !== 1) {
          since = undefined;
          return undefined;
        }
        const [main, row] = mains[0]!;
        if (!since || since.main !== main || since.term !== row!.term) since = { main, term: row!.term, at: Date.now() };
        return Date.now() - since.at >= stableMs ? { main, rows: new Map([...last].map(([tr, r]) => [tr, r!])) } : undefined;
      }, deadlineMs);
    } catch {
      throw new Error(`no ${what} within ${deadlineMs} ms${stableMs ? ` (stable for ${stableMs} ms)` : ''}: ${this.describe(last)}`);
    }
  }

  /**
   * Exactly one main (`main`, if given) and every other tracker of `among` its backup, in its term, with
   * its state hash. Fails after `deadlineMs`, saying what each tracker said last.
   */
  async converged(among: TrackerProcess[] = this.trackers, { deadlineMs = 10_000, main }: { deadlineMs?: number; main?: TrackerProcess } = {}): Promise<MainSighting> {
    let last = new Map<TrackerProcess, StatusRow | undefined>();
    try {
      return await until(
        `${main ? `${main.name} to be main and ` : 'one main, and '}${among.map((tr) => tr.name).join(', ')} to hold its state`,
        async () => {
          last = await this.sight(among);
          const rows = [...last.values()];
          const mains = [...last].filter(([, r]) => r?.role === 'primary');
          if (!rows.every((r) => r) || mains.length !== 1 || (main && mains[0]![0] !== main)) return undefined;
          const head = mains[0]![1]!;
          const ok = rows.every((r) => r!.hash === head.hash && r!.term === head.term && (r!.role === 'primary' || r!.role === 'backup'));
          return ok ? { main: mains[0]![0], rows: new Map([...last].map(([tr, r]) => [tr, r!])) } : undefined;
        },
        deadlineMs,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}: ${this.describe(last)}`);
    }
  }

  /** Each tracker's `blacklist ls` (undefined where it does not answer). */
  async blacklists(list: TrackerProcess[] = this.trackers): Promise<Map<TrackerProcess, string[] | undefined>> {
    const lists = await Promise.all(list.map((tr) => (tr.running && !tr.isPaused ? tr.admin.blacklist().catch(() => undefined) : undefined)));
    return new Map(list.map((tr, i) => [tr, lists[i]]));
  }

  /** The logs of every tracker, last lines only, for a comment when something went wrong. */
  tails(n = 15): string {
    return this.trackers.map((tr) => `== ${tr.name} ==\n${tr.tail(n)}`).join('\n');
  }

  async close(): Promise<void> {
    await Promise.all(this.trackers.map((tr) => tr.kill9()));
    await closeMesh(this.proxies);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Polls `observe` until `done` holds or `ms` pass, and returns the last observation either way, so that
 * the assertion that follows can show what was really there.
 */
export async function settle<T>(what: string, ms: number, observe: () => Promise<T>, done: (v: T) => boolean, everyMs = 25): Promise<{ ok: boolean; last: T | undefined; waitedMs: number }> {
  let last: T | undefined;
  const started = Date.now();
  try {
    await until(what, async () => {
      last = await observe();
      return done(last);
    }, ms, everyMs);
    return { ok: true, last, waitedMs: Date.now() - started };
  } catch {
    return { ok: false, last, waitedMs: Date.now() - started };
  }
}
