/**
 * The three programs as a user runs them, built into dist/ (by `npm test`'s pretest) or installed
 * elsewhere (a global install of the package's tarball: `bin` names its bin folder): run one to
 * completion, or start a daemon and follow its log lines on stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { until } from './wait.js';
import { ROOT } from './root.js';
import type { Tap } from './tap.js';


export { ROOT };
export const PROGRAMS = { 'p2p': 'dist/cli/main.js', 'p2p-tracker': 'dist/daemon/main.js', 'p2p-peerd': 'dist/peerd/main.js' } as const;
export type Program = keyof typeof PROGRAMS;
export const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

export interface ProgramOptions {
  /** A bin folder with the installed programs (links from a global install); default: this checkout's dist/. */
  bin?: string;
  /**
   * false: run without the test runner's coverage hook (see programCommand), for runs whose time is
   * measured (the hook adds about 0.3 s to each) or that repeat what a covered run already did.
   */
  coverage?: boolean;
}

/**
 * The command that runs `script` with Node as a program of its own, as a user runs it: without the test
 * runner's coverage hook. tap's @tapjs/processinfo adds an `--import` of itself to NODE_OPTIONS in every
 * process a test spawns; loading it costs each process about 0.25 s of CPU before our code starts, and the
 * suite starts a few hundred daemons (the cluster fault tests took 38 s with it, 28.5 s without).
 * `/usr/bin/env` empties NODE_OPTIONS after the hook has added itself. The daemons' code is covered where
 * tests run the same classes in process; what only a separate process runs (their `main` files) shows as
 * less covered. Programs run to completion keep the hook (`run` below, unless `coverage: false`): much of
 * cli/ runs only in them.
 */
export function programCommand(script: string, args: string[]): { command: string; args: string[] } {
  return { command: '/usr/bin/env', args: ['NODE_OPTIONS=', process.execPath, script, ...args] };
}

/** The script to run for `program`: this checkout's build, or what an installed bin link points at. */
function scriptOf(program: Program, options: ProgramOptions): string {
  return options.bin ? fs.realpathSync(path.join(options.bin, program)) : path.join(ROOT, PROGRAMS[program]);
}

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a program to completion (killed after `timeoutMs`, which then fails the assertion on `code`). */
export function run(program: Program, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 15_000, options: ProgramOptions = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    // With the test runner's coverage hook (see programCommand) unless told otherwise: much of cli/ runs
    // only in these.
    const script = scriptOf(program, options);
    const p = options.coverage === false ? programCommand(script, args) : { command: process.execPath, args: [script, ...args] };
    const child = spawn(p.command, p.args, { cwd: ROOT, env: { ...process.env, P2P_SOCKET: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
  });
}

/** A long-running program, with its log lines on stderr as they arrive (parsed when they are JSON). */
export interface Daemon {
  child: ChildProcess;
  logs: Array<Record<string, unknown>>;
  /** Everything it wrote on stderr so far. */
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
  /** Waits for a log line with this `msg`. */
  logged(msg: string): Promise<Record<string, unknown>>;
}

/** Starts a daemon (killed at the test's end if still running); `args` are all its arguments. */
export function start(t: Tap, program: 'p2p-tracker' | 'p2p-peerd', args: string[], options: ProgramOptions = {}): Daemon {
  const p = programCommand(scriptOf(program, options), args);
  const child = spawn(p.command, p.args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  let text = '';
  let partial = '';
  child.stderr!.on('data', (d: Buffer) => {
    text += d.toString();
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: `(not JSON) ${line}` });
      }
    }
  });
  let signalledAt = 0;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, ms: signalledAt ? performance.now() - signalledAt : 0 })),
  );
  const kill = child.kill.bind(child);
  child.kill = (signal?: NodeJS.Signals | number): boolean => {
    signalledAt = performance.now();
    return kill(signal);
  };
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) kill('SIGKILL');
  });
  return {
    child,
    logs,
    stderr: () => text,
    exited,
    logged: (msg) =>
      until(`${program} to log '${msg}' (logs so far: ${JSON.stringify(logs.map((l) => l.msg))})`, () => {
        if (child.exitCode !== null) throw new Error(`${program} exited with ${child.exitCode}: ${JSON.stringify(logs)}`);
        return logs.find((l) => l.msg === msg);
      }, 10_000, 50),
  };
}

/** A temporary folder, removed at the test's end. */
export function tempDir(t: Tap, prefix = 'p2p-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
