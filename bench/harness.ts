/**
 * What the benchmarks share: the processes they start (and always stop, by pid, also on Ctrl-C), the
 * temporary folder, the `p2p` command line, polling for readiness (test/helpers/wait.ts, shared with the
 * tests), the test file, and what /proc says about a process's CPU time and memory. Benchmarks drive the real programs in dist/, never the classes.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ROOT } from '../test/helpers/root.js';
import { sleep } from '../test/helpers/wait.js';

export const MIB = 1024 * 1024;
export const GIB = 1024 * MIB;

/** The checkout (test/helpers/root.ts finds it for the tests and the benchmarks alike). */
export { ROOT };
export const PROGRAMS = {
  tracker: path.join(ROOT, 'dist', 'daemon', 'main.js'),
  peerd: path.join(ROOT, 'dist', 'peerd', 'main.js'),
  cli: path.join(ROOT, 'dist', 'cli', 'p2p.cjs'),
  baseline: path.join(ROOT, 'dist', 'bench', 'baseline.js'),
} as const;

export function assertBuilt(): void {
  for (const p of Object.values(PROGRAMS)) {
    if (!fs.existsSync(p)) throw new Error(`${path.relative(ROOT, p)} is missing; run npm run build first`);
  }
}

/** An integer flag of a bench script, at least `min`; otherwise a one-line error and exit code 2. */
export function intFlag(program: string, flag: string, v: string, min = 1): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`${program}: --${flag} must be an integer >= ${min}\n`);
    process.exit(2);
  }
  return n;
}

const HELP_FLAG = { help: { type: 'boolean', short: 'h', default: false } } as const;
/** What benchFlags returns for `options`: each flag's value, typed as parseArgs types it. */
type BenchFlagValues<O extends NonNullable<ParseArgsConfig['options']>> = ReturnType<typeof parseArgs<{ options: O & typeof HELP_FLAG }>>['values'];

/**
 * A bench script's flags from its command line (node's parseArgs, strict), with --help and -h: a flag it
 * does not know, or one without its value, is a one-line error and exit code 2 (`Try 'npm run X -- --help'`);
 * --help prints `usage` (its lines joined by newlines) and exits 0.
 */
export function benchFlags<const O extends NonNullable<ParseArgsConfig['options']>>(program: string, npmScript: string, options: O, usage: readonly string[]): BenchFlagValues<O> {
  let values: BenchFlagValues<O>;
  try {
    ({ values } = parseArgs({ options: { ...options, ...HELP_FLAG } }));
  } catch (err) {
    process.stderr.write(`${program}: ${(err as Error).message}\nTry '${npmScript} -- --help'.\n`);
    process.exit(2);
  }
  // The generic values type is resolved only where the options are known: here, help is a boolean.
  if ((values as { help: boolean }).help) {
    process.stdout.write(usage.join('\n'));
    process.exit(0);
  }
  return values;
}

export { GiveUp, sleep, until } from '../test/helpers/wait.js';

/** A free TCP port on loopback (the tracker needs a known one; a tiny race is fine for a benchmark). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => srv.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

export function canConnect(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface Started {
  name: string;
  child: ChildProcess;
  pid: number;
  logPath: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * The processes a benchmark started and the folder it works in. `cleanup()` stops every process still
 * running (SIGTERM, then SIGKILL after a grace period), by pid, and removes the folder; it also runs on
 * SIGINT/SIGTERM, so an interrupted run leaves nothing behind.
 */
export class Workspace {
  readonly processes = new Set<Started>();
  private cleaning: Promise<void> | undefined;
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    process.stderr.write(`\n${signal}: stopping the benchmark's processes and removing ${this.dir}\n`);
    void this.cleanup().finally(() => process.exit(130));
  };

  private constructor(
    readonly dir: string,
    private readonly keep: boolean,
  ) {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  static async create(prefix: string, keep = false): Promise<Workspace> {
    return new Workspace(await fsp.mkdtemp(path.join(os.tmpdir(), `${prefix}-`)), keep);
  }

  path(...parts: string[]): string {
    return path.join(this.dir, ...parts);
  }

  async mkdir(...parts: string[]): Promise<string> {
    const p = this.path(...parts);
    await fsp.mkdir(p, { recursive: true, mode: 0o700 });
    return p;
  }

  /** Starts `node script args`, stderr (JSON logs) to a file in the workspace for diagnosis. */
  start(
    name: string,
    script: string,
    args: string[],
    opts: { command?: string; commandArgs?: string[]; env?: NodeJS.ProcessEnv; pipeStdout?: boolean } = {},
  ): Started {
    // Nothing new once cleanup has begun (an interrupted run must not leave a late process behind).
    if (this.cleaning) throw new Error(`not starting ${name}: the benchmark is stopping`);
    const logPath = this.path(`${name}.log`);
    const log = fs.openSync(logPath, 'a');
    const command = opts.command ?? process.execPath;
    const child = spawn(command, [...(opts.commandArgs ?? []), script, ...args], {
      cwd: ROOT,
      stdio: ['ignore', opts.pipeStdout ? 'pipe' : log, log],
      env: opts.env ?? process.env,
    });
    fs.closeSync(log);
    if (child.pid === undefined) throw new Error(`cannot start ${name}`);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => {
        // Said in its log too: a process that died of a signal (a crash, the kernel) writes nothing itself.
        try {
          fs.appendFileSync(logPath, `--- ${name} (pid ${child.pid}) exited: ${signal ?? `code ${code}`} ---\n`);
        } catch {
          // the workspace is being removed
        }
        resolve({ code, signal });
      });
    });
    const started: Started = { name, child, pid: child.pid, logPath, exited };
    this.processes.add(started);
    void exited.then(() => this.processes.delete(started));
    return started;
  }

  /** Stops one process this benchmark started: SIGTERM (a clean leave), SIGKILL if it lingers. */
  async stop(p: Started, graceMs = 10_000): Promise<void> {
    if (p.child.exitCode !== null || p.child.signalCode !== null) return;
    p.child.kill('SIGTERM');
    const timer = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
    await p.exited;
    clearTimeout(timer);
  }

  /** The last lines a process logged, for an error message. */
  tail(p: Started, lines = 15): string {
    try {
      return fs.readFileSync(p.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  cleanup(): Promise<void> {
    this.cleaning ??= (async () => {
      await Promise.all([...this.processes].map((p) => this.stop(p, 5000)));
      if (this.keep) process.stderr.write(`kept ${this.dir}\n`);
      else await fsp.rm(this.dir, { recursive: true, force: true });
      process.off('SIGINT', this.onSignal);
      process.off('SIGTERM', this.onSignal);
    })();
    return this.cleaning;
  }
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  wallSeconds: number;
}

/** Runs `p2p --socket SOCKET ARGS... --json` and returns what it printed. */
export function p2p(socket: string, args: string[], timeoutMs = 600_000): Promise<CliResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [PROGRAMS.cli, '--socket', socket, ...args, '--json'],
      { cwd: ROOT, timeout: timeoutMs, maxBuffer: 16 * MIB },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr, wallSeconds: (performance.now() - t0) / 1000 });
      },
    );
  });
}

/** `p2p ... --json` that must succeed; returns the parsed document. */
export async function p2pJson<T>(socket: string, args: string[], timeoutMs?: number): Promise<{ value: T; wallSeconds: number }> {
  const r = await p2p(socket, args, timeoutMs);
  if (r.code !== 0) throw new Error(`p2p ${args.join(' ')} exited ${r.code}: ${r.stderr.trim().split('\n')[0] ?? ''}`);
  return { value: JSON.parse(r.stdout) as T, wallSeconds: r.wallSeconds };
}

/** Writes `sizeMiB` MiB of random bytes, 1 MiB at a time, and syncs it so its writeback cannot slow the first run. */
export async function generateFile(file: string, sizeMiB: number): Promise<void> {
  const fh = await fsp.open(file, 'w', 0o644);
  try {
    const block = Buffer.allocUnsafe(MIB);
    for (let i = 0; i < sizeMiB; i++) {
      randomFillSync(block);
      await fh.write(block, 0, MIB);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

let clockTicks: number | undefined;
/** Clock ticks per second, the unit of utime/stime in /proc/PID/stat (`getconf CLK_TCK`, normally 100). */
export function clockTicksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** CPU seconds a process has used so far in user and in kernel mode, from /proc/PID/stat. */
export function cpuTimes(pid: number): { user: number; system: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces; count fields from after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const tick = clockTicksPerSecond();
  return { user: Number(fields[11]) / tick, system: Number(fields[12]) / tick }; // fields 14 and 15 of the line
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuSeconds(pid: number): number {
  const t = cpuTimes(pid);
  return t.user + t.system;
}

/**
 * CPU seconds the whole machine has been busy (all CPUs, user + system + interrupts + steal), from
 * /proc/stat. Compared with what our own processes used over the same time, it shows how much other
 * work ran on the machine during a measurement (kernel writeback threads count as other work too).
 */
export function machineBusySeconds(): number {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return (user! + nice! + system! + irq! + softirq! + steal!) / clockTicksPerSecond();
}

/**
 * Waits, at most `maxMs`, until the machine is quiet: less than `share` of its CPUs busy over a window of
 * `windowMs` (call it while none of our own processes run, or while only idle ones do). Returns the last
 * busy share seen (NaN when `maxMs` is 0: not waiting at all).
 */
export async function waitQuiet(maxMs: number, { share = 0.1, windowMs = 2000 } = {}): Promise<number> {
  if (maxMs <= 0) return NaN;
  const deadline = performance.now() + maxMs;
  const cpus = os.cpus().length;
  for (;;) {
    const before = machineBusySeconds();
    await sleep(windowMs);
    const busy = (machineBusySeconds() - before) / ((windowMs / 1000) * cpus);
    if (busy < share || performance.now() >= deadline) return busy;
  }
}

/**
 * CPU seconds of this process and of its children that have exited and been waited for (the `p2p`
 * commands, the baseline sender): utime + stime + cutime + cstime from /proc/self/stat.
 */
export function ownCpuSeconds(): number {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / clockTicksPerSecond();
}

/** A field of /proc/PID/status in bytes (VmRSS: resident now; VmHWM: the process's lifetime peak). */
export function memoryBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

/** Samples a process's resident memory every `intervalMs` and keeps the largest value. */
export class RssSampler {
  private peak = 0;
  private readonly timer: NodeJS.Timeout;
  constructor(
    private readonly pid: number,
    intervalMs = 50,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }
  private sample(): void {
    try {
      this.peak = Math.max(this.peak, memoryBytes(this.pid, 'VmRSS'));
    } catch {
      // the process is gone; keep what was seen
    }
  }
  stop(): number {
    this.sample();
    clearInterval(this.timer);
    return this.peak;
  }
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile (NaN for no values). */
/** mulberry32: a small, fast, seedable generator, the same everywhere; good enough for schedules, names and targets. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** The code measured: `git describe --always --dirty` of the checkout, or 'unknown' outside git. */
export function codeVersion(): string {
  try {
    return execFileSync('git', ['describe', '--always', '--dirty'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

export function machineInfo(): { node: string; platform: string; cpus: number; cpuModel: string; memoryGiB: number; loadAverage: number[]; date: string } {
  const cpus = os.cpus();
  return {
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / GIB) * 10) / 10,
    loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100),
    date: new Date().toISOString(),
  };
}
