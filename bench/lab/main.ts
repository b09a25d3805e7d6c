/**
 * npm run lab -- [--scenario peers,uneven,saturated,failure,flash,resume|all] [--runs 3] [--size-mib 100]
 *                [--n 1-20] [--strategies adaptive,original,aria2c] [--crowd 20] [--quiet-wait 30] [--smoke]
 *                [--results DIR] [--keep]
 * npm run lab -- --cleanup | --render
 *
 * The network lab: builds a small network of namespaces on this machine, runs the real p2p-tracker and
 * p2p-peerd in it, and writes bench/results/lab-SCENARIO.{json,md,svg}. Needs root (namespaces, tc).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { assertBuilt, machineInfo, ROOT, Workspace } from '../harness.js';
import { cleanupStaleCgroups, startCpuAccount, stopCpuAccount } from './cpu-account.js';
import { emergencyTeardown, setPeerdFlags, setQuietWait, snapshotDist } from './lab.js';
import { BRIDGE, bridgeExists, cleanupStale, labNamespaces, NS_PREFIX } from './network.js';
import { engineVersion, writeReport } from './report.js';
import { COMPARATORS, isComparator, type Comparator } from './comparator.js';
import { isStrategy, makeTestFile, STRATEGIES, type LabOptions, type Scenario, type Strategy } from './scenario.js';
import { failureScenario } from './scenarios/failure.js';
import { flashScenario } from './scenarios/flash.js';
import { peersReport, peersScenario, type PeersRun } from './scenarios/peers.js';
import { resumeScenario } from './scenarios/resume.js';
import { saturatedScenario } from './scenarios/saturated.js';
import { unevenScenario } from './scenarios/uneven.js';

const SCENARIOS: Record<string, Scenario> = {
  peers: peersScenario,
  uneven: unevenScenario,
  saturated: saturatedScenario,
  failure: failureScenario,
  flash: flashScenario,
  resume: resumeScenario,
};

const HELP = `usage: npm run lab -- [options]

Builds a network of namespaces (bridge p2plab0, 10.77.0.0/24, uplinks capped with tc tbf), runs the real
p2p-tracker and p2p-peerd in it and writes bench/results/lab-SCENARIO.{json,md,svg}. Needs root.

  --scenario LIST     ${Object.keys(SCENARIOS).join(',')} or all (default all)
  --runs N            runs per point (default 3)
  --size-mib N        the test file's size (default 100)
  --n LIST            scenario 1's seeder counts, e.g. 1-20 or 1,2,5,10 (default 1-20)
  --strategies LIST   the engine's adaptive,original and the comparator aria2c (peers and uneven)
                      (aria2c fetching from nginx; skipped with a note if either is missing);
                      default all three
  --crowd N           scenario 5's downloaders (default 20)
  --smoke             a quick check of the plumbing: 10 MiB, N 1-3, 1 run, 5 downloaders;
                      results go to bench/.work/lab-smoke unless --results says otherwise
  --quiet-wait S      before each download, wait up to S seconds for the machine to be mostly idle
                      (other work on a 2-core machine distorts the measurement; default 5)
  --plain-chunk-links every p2p-peerd runs with --plain-chunk-links (chunk links without TLS); results go
                      to lab-SCENARIO-plain.{json,md,svg}, beside the TLS run's
  --results DIR       where to write the results (default bench/results)
  --keep              keep the working folder (logs of every process) in the temp directory
  --cleanup           remove what a lab killed without a chance to clean up left behind, and exit
  --render            write lab-peers.md/.svg again from lab-peers.json (no network, no root)
  --help`;

function fail(msg: string): never {
  process.stderr.write(`lab: ${msg}\n`);
  process.exit(2);
}

function parseList(v: string, what: string): number[] {
  const out: number[] = [];
  for (const part of v.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) fail(`bad ${what}: ${v}`);
    const a = Number(m[1]);
    const b = m[2] ? Number(m[2]) : a;
    for (let i = a; i <= b; i++) out.push(i);
  }
  return out;
}

function positiveInt(v: string | undefined, flag: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) fail(`--${flag} must be a positive integer`);
  return n;
}

const LAB_PID_FILE = 'lab.pid';

/** A process that exists and is not a zombie (a lab killed hard may stay one until it is reaped). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Labs running now, by the pid in their working folder. */
function runningLabs(): number[] {
  const pids: number[] = [];
  for (const d of fs.readdirSync(os.tmpdir()).filter((e) => e.startsWith('p2plab-'))) {
    try {
      const pid = Number(fs.readFileSync(path.join(os.tmpdir(), d, LAB_PID_FILE), 'utf8'));
      if (pid !== process.pid && alive(pid)) pids.push(pid);
    } catch {
      // not a lab folder, or an old one
    }
  }
  return pids;
}

/** The working folders and dist/ snapshots of labs killed hard (their pid is gone). */
function cleanupStaleWorkspaces(): string[] {
  const done: string[] = [];
  const work = path.join(ROOT, 'bench', '.work');
  for (const d of fs.existsSync(work) ? fs.readdirSync(work) : []) {
    const m = /^lab-dist-(\d+)$/.exec(d);
    if (m && !alive(Number(m[1]))) {
      fs.rmSync(path.join(work, d), { recursive: true, force: true });
      done.push(`removed ${path.join(work, d)}`);
    }
  }
  for (const d of fs.readdirSync(os.tmpdir()).filter((e) => e.startsWith('p2plab-'))) {
    const dir = path.join(os.tmpdir(), d);
    let pid: number;
    try {
      pid = Number(fs.readFileSync(path.join(dir, LAB_PID_FILE), 'utf8'));
    } catch {
      continue;
    }
    if (!alive(pid)) {
      fs.rmSync(dir, { recursive: true, force: true });
      done.push(`removed ${dir}`);
    }
  }
  return done;
}

/** `--render`: the tables and chart again from a scenario's JSON (after a change to the report), no network. */
async function render(names: string[], dir: string): Promise<void> {
  for (const name of names) {
    if (name !== 'peers') fail(`--render supports the peers scenario only (the others take a minute or two to run again)`);
    const file = path.join(dir, `lab-${name}.json`);
    const json = JSON.parse(fs.readFileSync(file, 'utf8')) as {
      params: Record<string, unknown> & { n: number[]; strategies: Strategy[]; comparators?: string[]; sizeMiB: number; runs: number };
      runs: PeersRun[];
      elapsedSeconds: number;
      engine?: { commit: string; modified: string[]; distBuiltAt?: string };
      machine: ReturnType<typeof machineInfo>;
    };
    // Results from before issue 8 have no comparator rows.
    const comparators = (json.params.comparators ?? []).filter(isComparator);
    const report = peersReport({ runs: json.runs, counts: json.params.n, strategies: json.params.strategies, comparators, sizeMiB: json.params.sizeMiB, runsPerPoint: json.params.runs, elapsedSeconds: json.elapsedSeconds });
    report.params = json.params;
    report.machine = json.machine;
    if (json.engine) report.engine = json.engine;
    process.stdout.write(`${(await writeReport(dir, report)).map((w) => path.relative(process.cwd(), w)).join('\n')}\n`);
  }
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        scenario: { type: 'string', default: 'all' },
        runs: { type: 'string' },
        'size-mib': { type: 'string' },
        n: { type: 'string' },
        strategies: { type: 'string', default: [...STRATEGIES, ...COMPARATORS].join(',') },
        crowd: { type: 'string' },
        'quiet-wait': { type: 'string' },
        smoke: { type: 'boolean', default: false },
        'plain-chunk-links': { type: 'boolean', default: false },
        results: { type: 'string' },
        keep: { type: 'boolean', default: false },
        cleanup: { type: 'boolean', default: false },
        render: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }).values;
  } catch (err) {
    fail(`${(err as Error).message}\n${HELP}`);
  }
  if (parsed.help) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  if (parsed.render) {
    await render(parsed.scenario === 'all' ? ['peers'] : parsed.scenario.split(','), path.resolve(parsed.results ?? path.join(ROOT, 'bench', 'results')));
    return;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('lab: needs root (it creates network namespaces, a bridge and tc qdiscs); run it as root, e.g. sudo npm run lab\n');
    process.exit(1);
  }
  if (parsed.cleanup) {
    const running = runningLabs();
    if (running.length) {
      process.stderr.write(`lab: a lab is running (pid ${running.join(', ')}); --cleanup is for what a lab killed hard left behind\n`);
      process.exit(1);
    }
    const done = [...cleanupStale(), ...cleanupStaleCgroups(), ...cleanupStaleWorkspaces()];
    process.stdout.write(done.length ? `${done.join('\n')}\n` : 'nothing to clean up\n');
    return;
  }
  const names = parsed.scenario === 'all' ? Object.keys(SCENARIOS) : parsed.scenario.split(',').map((s) => s.trim());
  for (const n of names) if (!SCENARIOS[n]) fail(`unknown scenario '${n}' (one of ${Object.keys(SCENARIOS).join(', ')}, or all)`);
  const strategies: Strategy[] = [];
  const comparators: Comparator[] = [];
  for (const s of parsed.strategies.split(',').map((x) => x.trim())) {
    if (isStrategy(s)) strategies.push(s);
    else if (isComparator(s)) comparators.push(s);
    else fail(`unknown strategy '${s}' (one of ${[...STRATEGIES, ...COMPARATORS].join(', ')})`);
  }
  if (strategies.length === 0) fail(`--strategies needs at least one of the engine's (${STRATEGIES.join(', ')}): a comparator is measured beside the engine, not alone`);
  const smoke = parsed.smoke;
  const opts: LabOptions = {
    runs: positiveInt(parsed.runs, 'runs', smoke ? 1 : 3),
    sizeMiB: positiveInt(parsed['size-mib'], 'size-mib', smoke ? 10 : 100),
    peerCounts: parsed.n ? parseList(parsed.n, '--n') : smoke ? [1, 2, 3] : parseList('1-20', '--n'),
    strategies,
    comparators,
    crowd: positiveInt(parsed.crowd, 'crowd', smoke ? 5 : 20),
    log: (msg) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`),
  };
  const quietWaitSeconds = parsed['quiet-wait'] === undefined ? 5 : Number(parsed['quiet-wait']);
  if (!Number.isFinite(quietWaitSeconds) || quietWaitSeconds < 0) fail('--quiet-wait must be a number of seconds >= 0');
  if (opts.peerCounts.some((n) => n < 1 || n > 100)) fail('--n values must be between 1 and 100');
  if (bridgeExists() || labNamespaces().length > 0) {
    process.stderr.write(`lab: a lab network already exists (bridge ${BRIDGE} or namespaces ${NS_PREFIX}*): ${runningLabs().length ? 'another lab is running' : 'a lab was killed hard; remove what it left with: npm run lab -- --cleanup'}\n`);
    process.exit(1);
  }
  const resultsDir = path.resolve(parsed.results ?? path.join(ROOT, 'bench', smoke ? '.work/lab-smoke' : 'results'));
  assertBuilt();
  if (!fs.existsSync(path.join(ROOT, 'dist', 'bench', 'lab', 'delay-proxy.js'))) fail('dist/bench/lab/delay-proxy.js is missing; run npm run build');

  const ws = await Workspace.create('p2plab', parsed.keep);
  // Tells --cleanup whose folder this is (removed with the folder).
  fs.writeFileSync(ws.path(LAB_PID_FILE), String(process.pid));
  // The Workspace stops its processes on SIGINT/SIGTERM and exits; this removes the network after that,
  // and after any other exit.
  // What is measured: dist/ as it is now, whatever is rebuilt meanwhile; and which commit it came from.
  const engine = { ...engineVersion(), distBuiltAt: fs.statSync(path.join(ROOT, 'dist', 'peerd', 'downloader.js')).mtime.toISOString() };
  const snapshot = snapshotDist();
  process.on('exit', () => {
    emergencyTeardown(ws);
    stopCpuAccount();
    fs.rmSync(snapshot, { recursive: true, force: true });
  });
  if (!startCpuAccount()) opts.log('lab: no cgroup for CPU accounting; other load on the machine will not be told apart');
  setQuietWait(quietWaitSeconds * 1000);
  const plain = parsed['plain-chunk-links'];
  setPeerdFlags(plain ? ['--plain-chunk-links'] : []);
  const t0 = performance.now();
  const written: string[] = [];
  let failed = 0;
  try {
    for (const name of names) {
      opts.log(`scenario ${name}: starting`);
      try {
        // Other work on the machine distorts a lab that is CPU-bound at the top end: note how busy it was.
        const loadAverageAtStart = os.loadavg().map((x) => Math.round(x * 100) / 100);
        const report = await SCENARIOS[name]!({ ws, opts, testFile: (sizeMiB) => makeTestFile(ws, sizeMiB) });
        report.engine = engine;
        report.params.loadAverageAtStart = loadAverageAtStart;
        report.params.chunkLinks = plain ? 'plain' : 'tls';
        if (plain) {
          // Its own files beside the TLS run's: lab-SCENARIO-plain.{json,md,svg}.
          report.scenario = `${report.scenario}-plain`;
          report.title = `${report.title}, plain chunk links (every p2p-peerd with --plain-chunk-links)`;
        }
        written.push(...(await writeReport(resultsDir, report)));
        for (const t of report.targets) opts.log(`scenario ${name}: ${t.holds ? 'holds' : 'DOES NOT HOLD'}: ${t.target}: ${t.measured}`);
        opts.log(`scenario ${name}: done in ${Math.round(report.elapsedSeconds)} s`);
      } catch (err) {
        failed++;
        opts.log(`scenario ${name}: FAILED: ${(err as Error).stack ?? String(err)}`);
      }
    }
  } finally {
    await ws.cleanup();
  }
  process.stdout.write(`${written.map((w) => path.relative(process.cwd(), w)).join('\n')}\n`);
  opts.log(`lab: ${names.length - failed} of ${names.length} scenario(s) done in ${Math.round((performance.now() - t0) / 1000)} s`);
  if (failed) process.exitCode = 1;
}

await main();
