#!/usr/bin/env node
/**
 * `p2p` start-up time (`npm run bench:cli`, issue 8): a tracker and one p2p-peerd sharing a small file in a
 * temporary folder, then `p2p --version`, `p2p status`, `p2p files` and `p2p --help` (the full parser)
 * run `--runs` times each as a user runs them, next to `node -e 0` measured in the same rounds: the floor
 * that no Node program goes below. The commands take turns within each round, so noise from other work
 * on the machine falls on all of them alike. Wall time is from spawn to exit of the child process; CPU
 * time (user + system, from /proc/self/stat's children's times) is less sensitive to that noise.
 * Also: how long the daemon takes to answer `status` on its control socket, measured from here with the
 * client the CLI uses, so the figures show how much of a `p2p status` is the daemon's part.
 * Prints a table; writes cli-startup.md only when given --results DIR.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ControlClient } from '../peerd/control.js';
import { assertBuilt, benchFlags, codeVersion, intFlag, machineInfo, median, ownCpuSeconds, percentile, PROGRAMS, ROOT, Workspace } from './harness.js';
import { startPeer, startTracker, waitReady } from './swarm.js';

/** The issue's target: `p2p status` against a running daemon, median wall time... */
const TARGET_STATUS_MS = 150;
/** ...on a machine where `node -e 0` took this long. */
const ISSUE_NODE_MS = 90;

interface Options {
  runs: number;
  warmup: number;
  results: string | undefined;
  keep: boolean;
}

interface Case {
  key: string;
  title: string;
  args: string[];
}

interface Timing {
  wallMs: number;
  cpuMs: number;
}

interface CaseResult extends Case {
  wallMs: number[];
  medianMs: number;
  p90Ms: number;
  medianCpuMs: number;
}

function parseOptions(): Options {
  const values = benchFlags(
    'cli-startup',
    'npm run bench:cli',
    {
      runs: { type: 'string', default: '20' },
      warmup: { type: 'string', default: '2' },
      results: { type: 'string' },
      keep: { type: 'boolean', default: false },
    },
    [
      'usage: npm run bench:cli -- [--runs N] [--warmup N] [--results DIR] [--keep]',
      '',
      '  --runs N       timed runs of each command; the table shows median and p90 (default 20)',
      '  --warmup N     untimed rounds first, to fill the page cache (default 2)',
      '  --results DIR  also write cli-startup.md there (default: print only)',
      '  --keep         keep the temporary folder (the daemons\' logs) for inspection',
      '',
    ],
  );
  return {
    runs: intFlag('cli-startup', 'runs', values.runs, 1),
    warmup: intFlag('cli-startup', 'warmup', values.warmup, 0),
    results: values.results,
    keep: values.keep,
  };
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/**
 * Runs `node ARGS` to its exit: its wall time, and its CPU time (with the little this process spends
 * spawning it; /proc counts in clock ticks, 10 ms, so only medians over many runs mean much).
 * A failure stops the benchmark.
 */
function timeRun(c: Case): Timing {
  const cpu0 = ownCpuSeconds();
  const t0 = performance.now();
  // Synchronous on purpose: nothing else of ours runs in this process while the child starts.
  const r = spawnSync(process.execPath, c.args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, P2P_SOCKET: '' } });
  const wallMs = performance.now() - t0;
  const cpuMs = (ownCpuSeconds() - cpu0) * 1000;
  if (r.status !== 0) throw new Error(`${c.title} exited ${r.status ?? r.signal}: ${r.stderr.toString().trim().split('\n')[0] ?? ''}`);
  return { wallMs, cpuMs };
}

/** The daemon's part: connecting (with the PING that proves the daemon answers), and one `status` call. */
async function daemonSide(socket: string, runs: number): Promise<{ connectMs: number; statusMs: number }> {
  const connect: number[] = [];
  const status: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const c = await ControlClient.connect(socket);
    const t1 = performance.now();
    await c.call('status', {});
    const t2 = performance.now();
    c.close();
    connect.push(t1 - t0);
    status.push(t2 - t1);
  }
  return { connectMs: median(connect), statusMs: median(status) };
}

const fmt = (ms: number): string => ms.toFixed(0);

function markdown(r: {
  machine: ReturnType<typeof machineInfo>;
  code: string;
  runs: number;
  cases: CaseResult[];
  daemon: { connectMs: number; statusMs: number };
}): string {
  const baseline = r.cases.find((c) => c.key === 'node')!;
  const status = r.cases.find((c) => c.key === 'status')!;
  const lines = [
    '# `p2p` start-up time',
    '',
    `Code ${r.code}, ${r.machine.date}. Node ${r.machine.node}, ${r.machine.platform}, ${r.machine.cpus} CPUs (${r.machine.cpuModel}), load average ${r.machine.loadAverage.join(' ')} at the start.`,
    `Produced by \`npm run bench:cli -- --runs ${r.runs}\` (bench/cli-startup.ts): wall time from spawn to exit, ${r.runs} runs of each, the commands taking turns; CPU: user + system.`,
    '',
    '| command | median ms | p90 ms | median over `node -e 0` | median CPU ms |',
    '|---|---:|---:|---:|---:|',
    ...r.cases.map((c) => `| ${c.title} | ${fmt(c.medianMs)} | ${fmt(c.p90Ms)} | ${c === baseline ? '' : `+${fmt(c.medianMs - baseline.medianMs)}`} | ${fmt(c.medianCpuMs)} |`),
    '',
    `The daemon's part of a \`p2p status\`, timed from the benchmark's process: connecting with a PING ${r.daemon.connectMs.toFixed(2)} ms, the \`status\` request ${r.daemon.statusMs.toFixed(2)} ms (medians).`,
    '',
    `Target (issue 8): \`p2p status\` under ${TARGET_STATUS_MS} ms, where the issue measured \`node -e 0\` at ${ISSUE_NODE_MS} ms (so about ${TARGET_STATUS_MS - ISSUE_NODE_MS} ms over it): ` +
      `${fmt(status.medianMs)} ms here, +${fmt(status.medianMs - baseline.medianMs)} over \`node -e 0\`; ${status.medianMs < TARGET_STATUS_MS ? 'met' : 'not met'}.`,
    '',
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  const opts = parseOptions();
  assertBuilt();
  const machine = machineInfo();
  const ws = await Workspace.create('p2p-cli-startup', opts.keep);
  try {
    const { address: tracker } = await startTracker(ws);
    // One shared file, so that `p2p files` prints a row.
    const file = path.join(await ws.mkdir('source'), 'hello.txt');
    fs.writeFileSync(file, 'hello\n');
    const peer = await startPeer(ws, 'peer', tracker, { files: [file] });
    await waitReady(ws, peer, 1);

    const cli = (...args: string[]): string[] => [PROGRAMS.cli, ...args];
    const cases: Case[] = [
      { key: 'node', title: '`node -e 0` (baseline)', args: ['-e', '0'] },
      { key: 'version', title: '`p2p --version`', args: cli('--version') },
      { key: 'status', title: '`p2p status`', args: cli('--socket', peer.socket, 'status') },
      { key: 'files', title: '`p2p files`', args: cli('--socket', peer.socket, 'files') },
      { key: 'help', title: '`p2p --help` (the full parser, yargs)', args: cli('--help') },
    ];
    for (let i = 0; i < opts.warmup; i++) for (const c of cases) timeRun(c);
    const timings = new Map<string, Timing[]>(cases.map((c) => [c.key, []]));
    for (let run = 1; run <= opts.runs; run++) {
      for (const c of cases) timings.get(c.key)!.push(timeRun(c));
      if (run % 5 === 0 || run === opts.runs) log(`${run}/${opts.runs} rounds`);
    }
    const results: CaseResult[] = cases.map((c) => {
      const t = timings.get(c.key)!;
      const ms = t.map((x) => x.wallMs);
      return { ...c, wallMs: ms, medianMs: median(ms), p90Ms: percentile(ms, 90), medianCpuMs: median(t.map((x) => x.cpuMs)) };
    });
    const daemon = await daemonSide(peer.socket, opts.runs);

    const md = markdown({ machine, code: codeVersion(), runs: opts.runs, cases: results, daemon });
    process.stdout.write(md);
    if (opts.results) {
      fs.mkdirSync(opts.results, { recursive: true });
      fs.writeFileSync(path.join(opts.results, 'cli-startup.md'), md);
      log(`wrote ${path.relative(process.cwd(), path.join(opts.results, 'cli-startup.md'))}`);
    }
  } finally {
    await ws.cleanup();
  }
}

main().catch((err: Error) => {
  process.stderr.write(`cli-startup: ${err.message}\n`);
  process.exit(1);
});
