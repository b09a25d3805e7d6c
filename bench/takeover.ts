#!/usr/bin/env node
/**
 * The takeover benchmark (`npm run bench:takeover`, issue 4): how long a tracker cluster is without a main
 * after the main dies, how long until every peer is back with the new main, and what replication costs
 * writes. The real programs on 127.0.0.1 in a temporary folder:
 *
 * - Takeover: a main and a backup `p2p-tracker` (`--cluster A,B`, `--admin-token-file`, default timings)
 *   and `--peers` `p2p-peerd`s, each sharing a small file of its own and one file they all hold. Then
 *   `--rounds` times: kill -9 the acting main; poll the backup's `admin status` (an AdminClient session,
 *   as `p2p admin` uses) until it reports itself primary (the takeover time), and every peer's `status`
 *   on its control socket (a ControlClient, as `p2p` uses) until it is connected to the new main and knows
 *   it as primary (the peers' re-registration time: a peer announces all its files on that session);
 *   check with `search` on the new main that every file still has all its holders; then restart the
 *   killed tracker and wait until the chain of command is back (rank 0 main again, states identical,
 *   every peer with it) before the next round. Times are measured from the SIGKILL.
 * - Write throughput: `--writes` blacklist additions, `--in-flight` at a time over one admin session,
 *   against a lone tracker and against a main with one in-sync backup (fresh processes and folders for
 *   each run, same flags), in `--write-runs` pairs run back to back. On a shared machine other work can
 *   halve a run; a pair during which it took more than QUIET_SHARE of the CPUs (from /proc/stat, less
 *   our own processes) is run again, and the figures come from the undisturbed pairs.
 *
 * Writes bench/results/takeover.{json,md} for a full run (20 rounds, default timings), or where --results
 * says; a shorter run only prints its table.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AdminClient } from '../cli/admin.js';
import { ControlClient, type StatusInfo } from '../peerd/index.js';
import { TrackerProcess } from '../test/helpers/tracker-process.js';
import { reservePorts } from '../test/helpers/wait.js';
import {
  assertBuilt,
  benchFlags,
  codeVersion,
  cpuSeconds,
  GiveUp,
  intFlag,
  machineBusySeconds,
  machineInfo,
  median,
  percentile,
  PROGRAMS,
  ROOT,
  sleep,
  until,
  waitQuiet,
  Workspace,
  type Started,
} from './harness.js';

const FULL_ROUNDS = 20;
const DEFAULT_HEARTBEAT_MS = 200;
const DEFAULT_FAILOVER_MS = 1000;
/** The issue's targets. */
const TAKEOVER_MARGIN_MS = 300;
const PEERS_BACK_MS = 2000;
const MIN_WRITE_RATIO = 0.5;
/** A measurement that takes longer than this is a failure, not a slow result. */
const MEASURE_TIMEOUT_MS = 15_000;
const SMALL_FILE_BYTES = 64 * 1024;
const WARMUP_WRITES = 200;
/** A throughput pair is counted only if other processes used less than this share of the CPUs during both runs. */
const QUIET_SHARE = 0.25;
/** Tries per pair before a noisy one is counted anyway. */
const PAIR_ATTEMPTS = 4;

interface Options {
  rounds: number;
  peers: number;
  heartbeatMs: number;
  failoverMs: number;
  writes: number;
  inFlight: number;
  writeRuns: number;
  pollMs: number;
  waitQuietSeconds: number;
  results: string | undefined;
  keep: boolean;
  /** SIGSTOP the main instead of kill -9 (a frozen main: the backups wait out the silence). */
  freeze: boolean;
}

function parseOptions(): Options {
  const values = benchFlags(
    'takeover',
    'npm run bench:takeover',
    {
      rounds: { type: 'string', default: String(FULL_ROUNDS) },
      peers: { type: 'string', default: '5' },
      'heartbeat-ms': { type: 'string', default: String(DEFAULT_HEARTBEAT_MS) },
      'failover-ms': { type: 'string', default: String(DEFAULT_FAILOVER_MS) },
      writes: { type: 'string', default: '2000' },
      'in-flight': { type: 'string', default: '16' },
      'write-runs': { type: 'string', default: '5' },
      'poll-ms': { type: 'string', default: '10' },
      'wait-quiet': { type: 'string', default: '0' },
      results: { type: 'string' },
      keep: { type: 'boolean', default: false },
      freeze: { type: 'boolean', default: false },
    },
    [
      'usage: npm run bench:takeover -- [--rounds N] [--peers N] [--heartbeat-ms N] [--failover-ms N]',
      '                                 [--writes N] [--in-flight N] [--write-runs N] [--results DIR] [--keep] [--freeze]',
      '',
      `  --rounds N        kill -9 rounds of the main (default ${FULL_ROUNDS})`,
      '  --peers N         p2p-peerd processes, each sharing a small file (default 5)',
      `  --heartbeat-ms N  the trackers' --heartbeat-ms (default ${DEFAULT_HEARTBEAT_MS})`,
      `  --failover-ms N   the trackers' --failover-ms (default ${DEFAULT_FAILOVER_MS})`,
      '  --writes N        timed blacklist additions per throughput run (default 2000)',
      '  --in-flight N     of them sent at once over one admin session (default 16)',
      '  --write-runs N    throughput runs against each setup, alternated (default 5)',
      '  --poll-ms N       how often admin status is polled after a kill (default 10; peers: twice that)',
      '  --wait-quiet S    on a shared machine, before each pair of throughput runs wait up to S seconds',
      '                    for other work to drop below 10% of the CPUs (default 0: do not wait)',
      `  --results DIR     where takeover.json and takeover.md go (default bench/results for a full run:`,
      `                    ${FULL_ROUNDS}+ rounds at default timings; otherwise only the table is printed)`,
      '  --keep            keep the temporary folder (every process\'s log) for inspection',
      '  --freeze          SIGSTOP the main instead of kill -9 (then kill it once the backup took over):',
      '                    the path of a frozen main or a dead machine, which refuses no connection, so the',
      '                    backup waits --failover-ms of silence (results: takeover-freeze.{json,md})',
      '',
    ],
  );
  const int = (flag: string, v: string, min = 1): number => intFlag('takeover', flag, v, min);
  const opts: Options = {
    rounds: int('rounds', values.rounds, 1),
    peers: int('peers', values.peers, 1),
    heartbeatMs: int('heartbeat-ms', values['heartbeat-ms'], 1),
    failoverMs: int('failover-ms', values['failover-ms'], 1),
    writes: int('writes', values.writes, 1),
    inFlight: int('in-flight', values['in-flight'], 1),
    writeRuns: int('write-runs', values['write-runs'], 1),
    pollMs: int('poll-ms', values['poll-ms'], 1),
    waitQuietSeconds: int('wait-quiet', values['wait-quiet'], 0),
    results: undefined,
    keep: values.keep,
    freeze: values.freeze,
  };
  const full = opts.rounds >= FULL_ROUNDS && opts.heartbeatMs === DEFAULT_HEARTBEAT_MS && opts.failoverMs === DEFAULT_FAILOVER_MS;
  opts.results = values.results ?? (full ? path.join(ROOT, 'bench', 'results') : undefined);
  return opts;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

class Peer {
  constructor(
    readonly name: string,
    readonly proc: Started,
    readonly client: ControlClient,
  ) {}

  status(): Promise<StatusInfo> {
    return this.client.call('status', {});
  }
}

/**
 * Trackers of one setup: `--cluster` of all of them (a lone tracker gets no --cluster at all), each a
 * process of the workspace (its log in NAME.log there, stopped at cleanup).
 */
async function makeTrackers(ws: Workspace, label: string, n: number, opts: Options, tokenFile: string, token: string): Promise<TrackerProcess[]> {
  const ports = await reservePorts(n);
  const cluster = ports.map((p) => `127.0.0.1:${p}`);
  const trackers: TrackerProcess[] = [];
  for (let i = 0; i < n; i++) {
    const name = `${label}-t${i}`;
    const dataDir = await ws.mkdir(name);
    const launch = (args: string[]): ChildProcess => {
      const started = ws.start(name, args[0]!, args.slice(1));
      launched.set(name, started);
      return started.child;
    };
    trackers.push(new TrackerProcess({ name, port: ports[i]!, cluster, dataDir, tokenFile, token, heartbeatMs: opts.heartbeatMs, failoverMs: opts.failoverMs, launch }));
  }
  return trackers;
}

/** The workspace's record of each tracker's last start, for its log. */
const launched = new Map<string, Started>();

function tail(ws: Workspace, tr: TrackerProcess): string {
  const started = launched.get(tr.name);
  return started ? ws.tail(started) : '';
}

/** Rank 0 is main, every other tracker is an in-sync backup in its term. */
async function chainRestored(trackers: TrackerProcess[]): Promise<true | undefined> {
  const rows = await Promise.all(trackers.map((t) => t.admin.self()));
  const main = rows[0]!;
  if (main.role !== 'primary') return undefined;
  const ok = rows.slice(1).every((r) => r.role === 'backup' && r.term === main.term && r.hash === main.hash);
  return ok ? true : undefined;
}

/** Every peer is connected to `address` and knows it as the main. */
function withMain(s: StatusInfo, address: string): boolean {
  return s.tracker.address === address && s.tracker.role === 'primary' && s.tracker.state === 'connected';
}

/** Every file the peers share is listed, with all its holders, by whatever tracker `via` uses. */
async function allHolders(via: Peer, peerCount: number): Promise<true | undefined> {
  const hits = await via.client.call('search', { text: '' });
  const count = (name: string): number => hits.filter((h) => h.name === name).reduce((n, h) => n + h.peers, 0);
  if (count('common.bin') !== peerCount) return undefined;
  for (let i = 1; i <= peerCount; i++) if (count(`peer${i}.bin`) !== 1) return undefined;
  return true;
}

/** Polls `check` every `everyMs` from now; resolves with the ms since `since` at which it first held. */
async function timeUntil(what: string, since: number, everyMs: number, check: () => Promise<boolean>): Promise<number> {
  await until(`${what} (within ${MEASURE_TIMEOUT_MS / 1000} s of the kill)`, check, MEASURE_TIMEOUT_MS - (performance.now() - since), everyMs);
  return performance.now() - since;
}

interface Round {
  round: number;
  /** kill -9 of the main -> the backup reports itself primary. */
  takeoverMs: number;
  /** kill -9 -> each peer connected to the new main and knowing it as main. */
  peerMs: number[];
  /** kill -9 -> the last peer back. */
  peersBackMs: number;
  /** kill -9 -> search on the new main shows every file with all its holders. */
  holdersOkMs: number;
  /** Restart of the killed tracker -> rank 0 main again, states identical, every peer with it. */
  restoreMs: number;
  termBefore: number;
  termAfter: number;
}

async function takeoverRounds(ws: Workspace, opts: Options, tokenFile: string, token: string): Promise<Round[]> {
  const trackers = await makeTrackers(ws, 'pair', 2, opts, tokenFile, token);
  const [a, b] = trackers as [TrackerProcess, TrackerProcess];
  const cluster = trackers.map((t) => t.address).join(',');
  const peers: Peer[] = [];
  try {
    for (const t of trackers) t.start();
    await until('the main and its backup', () => chainRestored(trackers).catch(() => undefined), 30_000, 50);

    // Each peer shares a file of its own and one they all hold (hard links of one file).
    const common = Buffer.alloc(SMALL_FILE_BYTES);
    randomFillSync(common);
    const commonPath = path.join(await ws.mkdir('source'), 'common.bin');
    await fsp.writeFile(commonPath, common);
    for (let i = 1; i <= opts.peers; i++) {
      const name = `peer${i}`;
      const share = await ws.mkdir(name, 'share');
      const data = await ws.mkdir(name, 'data');
      await fsp.link(commonPath, path.join(share, 'common.bin'));
      await fsp.writeFile(path.join(share, `${name}.bin`), randomBytes(SMALL_FILE_BYTES));
      const proc = ws.start(name, PROGRAMS.peerd, ['--trackers', cluster, '--share', share, '--data', data, '--listen', '127.0.0.1:0', '--log-level', 'info']);
      const socket = path.join(data, 'peerd.sock');
      const client = await until(`${name} to answer on its control socket`, async () => {
        if (proc.child.exitCode !== null) throw new GiveUp(`${name} exited: ${ws.tail(proc)}`);
        return ControlClient.connect(socket);
      }, 30_000, 50);
      peers.push(new Peer(name, proc, client));
    }
    await until('every peer with the main, every file with all its holders', async () => {
      const st = await Promise.all(peers.map((p) => p.status()));
      if (!st.every((s) => withMain(s, a.address) && s.shared === 2)) return undefined;
      return allHolders(peers[0]!, opts.peers);
    }, 30_000, 50);
    log(`main ${a.address}, backup ${b.address}, ${opts.peers} peers ready; ${opts.rounds} ${opts.freeze ? 'SIGSTOP' : 'kill -9'} rounds`);

    const rounds: Round[] = [];
    for (let round = 1; round <= opts.rounds; round++) {
      // Kill at a random point of the heartbeat period, not in step with the previous round's restore.
      await sleep(Math.random() * opts.heartbeatMs);
      const termBefore = (await a.admin.self()).term;
      const killedAt = performance.now();
      const killed = opts.freeze ? Promise.resolve(a.pause()) : a.kill9();
      const takeover = timeUntil('the backup taking over', killedAt, opts.pollMs, async () => (await b.admin.self()).role === 'primary');
      const peerMs = Promise.all(peers.map((p) => timeUntil(`${p.name} with the new main`, killedAt, opts.pollMs * 2, async () => withMain(await p.status(), b.address))));
      const [takeoverMs, perPeer] = await Promise.all([takeover, peerMs, killed]);
      const holdersOkMs = await timeUntil('every holder listed on the new main', killedAt, opts.pollMs * 2, async () => (await allHolders(peers[0]!, opts.peers)) === true);
      const termAfter = (await b.admin.self()).term;
      if (opts.freeze) await a.kill9();

      const restartedAt = performance.now();
      a.start();
      await until('the chain of command back (rank 0 main, states identical, every peer with it)', async () => {
        if (!(await chainRestored(trackers))) return undefined;
        const st = await Promise.all(peers.map((p) => p.status()));
        return st.every((s) => withMain(s, a.address)) ? true : undefined;
      }, 30_000, 20).catch((err: Error) => {
        throw new Error(`${err.message}\n--- ${a.name}:\n${tail(ws, a)}\n--- ${b.name}:\n${tail(ws, b)}`);
      });
      const restoreMs = performance.now() - restartedAt;
      const peersBackMs = Math.max(...perPeer);
      rounds.push({ round, takeoverMs, peerMs: perPeer, peersBackMs, holdersOkMs, restoreMs, termBefore, termAfter });
      log(
        `round ${String(round).padStart(2)}: takeover ${takeoverMs.toFixed(0)} ms, every peer back ${peersBackMs.toFixed(0)} ms, ` +
          `holders listed ${holdersOkMs.toFixed(0)} ms, term ${termBefore} -> ${termAfter}; command back ${restoreMs.toFixed(0)} ms after the restart`,
      );
    }
    return rounds;
  } finally {
    for (const p of peers) p.client.close();
    await Promise.all(peers.map((p) => ws.stop(p.proc)));
    await Promise.all(trackers.map((t) => t.stop()));
  }
}

interface WriteRun {
  setup: 'lone' | 'replicated';
  writes: number;
  seconds: number;
  perSecond: number;
  /** CPU (user + system) of every tracker of the setup over the timed writes, per write. */
  trackerCpuMsPerWrite: number;
  /** The same for each tracker: [main] or [main, backup]. */
  cpuMsPerWriteByTracker: number[];
  /** Share of the machine's CPUs that other processes used meanwhile (noise on a shared machine). */
  otherCpuShare: number;
  /** Runs come in pairs (a lone run and a replicated one, back to back); a noisy pair is tried again. */
  pair: number;
  attempt: number;
  /** Both runs of the pair had the machine to themselves (other work under QUIET_SHARE): counted. */
  quiet: boolean;
}

/** `count` distinct blacklist additions, `inFlight` at a time over one admin session. */
async function blast(admin: AdminClient, prefix: number, count: number, inFlight: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      await admin.add(`10.${prefix}.${(i >> 8) & 255}.${i & 255}`, 'takeover benchmark');
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return (performance.now() - t0) / 1000;
}

type Measured = Omit<WriteRun, 'pair' | 'attempt' | 'quiet'>;

async function writeRun(ws: Workspace, setup: WriteRun['setup'], label: string, opts: Options, tokenFile: string, token: string): Promise<Measured> {
  const trackers = await makeTrackers(ws, label, setup === 'lone' ? 1 : 2, opts, tokenFile, token);
  try {
    for (const t of trackers) t.start();
    await until(`the ${setup} setup to be ready`, () => chainRestored(trackers).catch(() => undefined), 30_000, 50);
    const main = trackers[0]!.admin;
    await main.withSession((admin) => blast(admin, 1, WARMUP_WRITES, opts.inFlight));
    const pids = trackers.map((t) => t.proc!.pid!);
    const cpuBefore = pids.map((pid) => cpuSeconds(pid));
    const machineBefore = machineBusySeconds();
    const ownBefore = process.cpuUsage();
    const seconds = await main.withSession((admin) => blast(admin, 2, opts.writes, opts.inFlight));
    const cpuEach = pids.map((pid, i) => cpuSeconds(pid) - cpuBefore[i]!);
    const trackerCpu = cpuEach.reduce((a, b) => a + b, 0);
    const own = process.cpuUsage(ownBefore);
    const other = Math.max(0, machineBusySeconds() - machineBefore - trackerCpu - (own.user + own.system) / 1e6);
    if (setup === 'replicated') {
      // Sanity: the backup really held every write (a lone tracker would be faster for the wrong reason).
      const entries = await trackers[1]!.admin.blacklist();
      if (entries.length !== WARMUP_WRITES + opts.writes) throw new Error(`the backup holds ${entries.length} entries, expected ${WARMUP_WRITES + opts.writes}`);
    }
    return {
      setup,
      writes: opts.writes,
      seconds,
      perSecond: opts.writes / seconds,
      trackerCpuMsPerWrite: (trackerCpu * 1000) / opts.writes,
      cpuMsPerWriteByTracker: cpuEach.map((c) => (c * 1000) / opts.writes),
      otherCpuShare: other / (seconds * os.cpus().length),
    };
  } finally {
    await Promise.all(trackers.map((t) => t.stop()));
  }
}

/**
 * Pairs of runs, lone and replicated back to back (which goes first alternates), each on fresh processes.
 * A pair during which other work took more than QUIET_SHARE of the CPUs is run again, up to PAIR_ATTEMPTS.
 */
async function writeThroughput(ws: Workspace, opts: Options, tokenFile: string, token: string): Promise<WriteRun[]> {
  const runs: WriteRun[] = [];
  for (let pair = 1; pair <= opts.writeRuns; pair++) {
    for (let attempt = 1; attempt <= PAIR_ATTEMPTS; attempt++) {
      if (opts.waitQuietSeconds > 0) {
        const busy = await waitQuiet(opts.waitQuietSeconds * 1000);
        if (busy >= 0.1) log(`  the machine is still ${fmt(100 * busy)}% busy after ${opts.waitQuietSeconds} s; going on`);
      }
      const order = pair % 2 ? (['lone', 'replicated'] as const) : (['replicated', 'lone'] as const);
      const measured: Measured[] = [];
      for (const setup of order) measured.push(await writeRun(ws, setup, `${setup}${pair}-${attempt}`, opts, tokenFile, token));
      const quiet = measured.every((w) => w.otherCpuShare < QUIET_SHARE);
      for (const w of measured) {
        runs.push({ ...w, pair, attempt, quiet });
        log(
          `  pair ${pair}${attempt > 1 ? ` (try ${attempt})` : ''} ${w.setup.padEnd(10)}: ${fmt(w.perSecond)} writes/s (${fmt(w.seconds, 2)} s), ` +
            `trackers' CPU ${w.cpuMsPerWriteByTracker.map((c) => fmt(c, 2)).join(' + ')} ms/write, other work ${fmt(100 * w.otherCpuShare)}% of the CPUs`,
        );
      }
      if (quiet) break;
      log(attempt < PAIR_ATTEMPTS ? '  other work disturbed this pair; running it again' : '  other work disturbed this pair every time; not counted');
    }
  }
  return runs;
}

interface Report {
  benchmark: 'takeover';
  /** How the main was made to fail: kill -9, or SIGSTOP (--freeze). */
  fault: 'kill -9' | 'SIGSTOP';
  settings: { heartbeatMs: number; failoverMs: number; peers: number; rounds: number; writes: number; inFlight: number; writeRuns: number; pollMs: number; waitQuietSeconds: number };
  machine: ReturnType<typeof machineInfo>;
  code: string;
  totalSeconds: number;
  takeover: { medianMs: number; p90Ms: number; maxMs: number; minMs: number };
  peersBack: { medianMs: number; p90Ms: number; maxMs: number; medianAfterTakeoverMs: number; maxAfterTakeoverMs: number };
  restore: { medianMs: number; maxMs: number };
  /**
   * Medians over the quiet pairs' runs (over every run if no pair was quiet: noisy = true); ratio: of the
   * medians (the target's figure); pairRatios: replicated / lone within each counted pair.
   */
  writes: { loneMedianPerSecond: number; replicatedMedianPerSecond: number; ratio: number; pairRatios: number[]; noisy: boolean; runs: WriteRun[] };
  targets: Array<{ what: string; measured: string; met: boolean }>;
  rounds: Round[];
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

function markdown(r: Report): string {
  const m = r.machine;
  const s = r.settings;
  const checks = r.targets.map((t) => `- ${t.met ? 'met' : '**missed**'}: ${t.what} (measured ${t.measured})`);
  const roundRows = r.rounds.map(
    (x) => `| ${x.round} | ${fmt(x.takeoverMs)} | ${fmt(x.peersBackMs)} | ${fmt(Math.max(0, x.peersBackMs - x.takeoverMs))} | ${fmt(x.restoreMs)} | ${x.termBefore} -> ${x.termAfter} |`,
  );
  const counted = (w: WriteRun): boolean => w.quiet || r.writes.noisy;
  const of = (setup: WriteRun['setup']): WriteRun[] => r.writes.runs.filter((w) => w.setup === setup);
  const writeRow = (title: string, setup: WriteRun['setup'], perSecond: number): string =>
    `| ${title} | ${fmt(perSecond)} | ${cpuSplit(of(setup).filter(counted))} | ${of(setup).map((w) => (counted(w) ? fmt(w.perSecond) : `(${fmt(w.perSecond)})`)).join(', ')} |`;
  // Median CPU per write of each tracker (main, then backup), and their sum.
  const cpuSplit = (runs: WriteRun[]): string => {
    const each = (runs[0]?.cpuMsPerWriteByTracker ?? []).map((_, i) => median(runs.map((w) => w.cpuMsPerWriteByTracker[i]!)));
    return each.length > 1 ? `${each.map((c) => fmt(c, 2)).join(' + ')} = ${fmt(median(runs.map((w) => w.trackerCpuMsPerWrite)), 2)}` : fmt(each[0] ?? NaN, 2);
  };
  const otherShare = median(r.writes.runs.filter(counted).map((w) => w.otherCpuShare));
  return [
    '# Tracker takeover benchmark',
    '',
    `A main and one backup \`p2p-tracker\` (\`--heartbeat-ms ${s.heartbeatMs} --failover-ms ${s.failoverMs}\`) and ${s.peers} \`p2p-peerd\`s on 127.0.0.1;`,
    r.fault === 'SIGSTOP'
      ? `${s.rounds} rounds of SIGSTOP of the main (a frozen main: it refuses no connection, so the backup waits --failover-ms of silence), then kill -9 of it once the backup took over, a restart, and the chain of command back before the next round.`
      : `${s.rounds} rounds of kill -9 of the main, then a restart of it and the chain of command back before the next round.`,
    `Times are from the ${r.fault === 'SIGSTOP' ? 'SIGSTOP' : 'SIGKILL'}. Takeover: until the backup reports itself primary in \`admin status\` (polled every`,
    `${s.pollMs} ms). Peers back: until every peer's \`status\` shows it connected to the new main and knowing it as main (polled`,
    `every ${s.pollMs * 2} ms); a peer announces all its files on that session. In every round \`search\` on the new main also listed`,
    `every file with all its holders, by ${fmt(Math.max(...r.rounds.map((x) => x.holdersOkMs)))} ms at the latest (holders are replicated: this checks that none was lost).`,
    r.fault === 'SIGSTOP'
      ? 'A takeover can come sooner than failover-ms after the SIGSTOP: the backup counts the silence from the last heartbeat it heard, up to one heartbeat period before.'
      : 'After kill -9 the main\'s kernel refuses the backup\'s connections and its links close, so the backup counts two missed heartbeats as failover-ms of silence (RaftNode.peerGone): the takeover comes 2 × heartbeat-ms after the last heartbeat it heard, plus the election. A frozen main: `--freeze`.',
    '',
    '| figure | median | p90 | max |',
    '|---|---:|---:|---:|',
    `| takeover, ms | ${fmt(r.takeover.medianMs)} | ${fmt(r.takeover.p90Ms)} | ${fmt(r.takeover.maxMs)} |`,
    `| every peer back with the new main, ms | ${fmt(r.peersBack.medianMs)} | ${fmt(r.peersBack.p90Ms)} | ${fmt(r.peersBack.maxMs)} |`,
    `| ... of which after the takeover, ms | ${fmt(r.peersBack.medianAfterTakeoverMs)} | | ${fmt(r.peersBack.maxAfterTakeoverMs)} |`,
    `| restart -> rank 0 main again, ms | ${fmt(r.restore.medianMs)} | | ${fmt(r.restore.maxMs)} |`,
    '',
    `Write throughput: ${s.writes} blacklist additions, ${s.inFlight} in flight over one admin session, after ${WARMUP_WRITES} untimed;`,
    `${s.writeRuns} pairs of runs, a lone tracker and a main with one in-sync backup back to back, each on fresh processes and folders.`,
    `A replicated write is on the backup's disk before the main answers. A pair during which other processes took more than`,
    `${fmt(100 * QUIET_SHARE)}% of the CPUs was run again (up to ${PAIR_ATTEMPTS} tries); runs in parentheses were disturbed and are not counted` +
      `${r.writes.noisy ? ' -- except that no pair was ever quiet, so these figures count every run and are noisy' : ''}` +
      `${s.waitQuietSeconds > 0 ? `; each try first waited up to ${s.waitQuietSeconds} s for the machine to be quiet (--wait-quiet)` : ''}.`,
    '',
    '| setup | median writes/s | trackers\' CPU ms/write | writes/s of each run |',
    '|---|---:|---:|---|',
    writeRow('lone tracker', 'lone', r.writes.loneMedianPerSecond),
    writeRow('main + in-sync backup', 'replicated', r.writes.replicatedMedianPerSecond),
    `| ratio replicated / lone | ${fmt(r.writes.ratio, 2)} | | in each pair: ${r.writes.pairRatios.map((x) => fmt(x, 2)).join(', ')} |`,
    '',
    `CPU ms/write: user + system CPU of each tracker over the timed writes (/proc/PID/stat), main + backup. Other processes used`,
    `${fmt(100 * otherShare)}% of the machine's CPUs during the counted runs (median).`,
    '',
    'Targets (issue 4):',
    ...checks,
    '',
    '<details><summary>Every round</summary>',
    '',
    '| round | takeover ms | every peer back ms | peers after takeover ms | command back ms | term |',
    '|---:|---:|---:|---:|---:|---|',
    ...roundRows,
    '',
    '</details>',
    '',
    `Machine: Node ${m.node}, ${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB RAM, ${m.platform}; load average ${m.loadAverage.join(' ')} at the start; ${m.date}.`,
    `Code: ${r.code}. The whole run took ${fmt(r.totalSeconds)} s. Raw figures: takeover.json.`,
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const opts = parseOptions();
  assertBuilt();
  const t0 = performance.now();
  const machine = machineInfo();
  const ws = await Workspace.create('p2p-takeover', opts.keep);
  try {
    const token = randomBytes(18).toString('hex');
    const tokenFile = ws.path('admin-token');
    fs.writeFileSync(tokenFile, token, { mode: 0o600 });

    const rounds = await takeoverRounds(ws, opts, tokenFile, token);

    log(`write throughput: ${opts.writes} blacklist additions, ${opts.inFlight} in flight, ${opts.writeRuns} pairs of runs (lone, replicated)`);
    const runs = await writeThroughput(ws, opts, tokenFile, token);

    const takeovers = rounds.map((r) => r.takeoverMs);
    const back = rounds.map((r) => r.peersBackMs);
    // Both are polled, so the last peer may be seen back a poll before the takeover is: count that as 0.
    const after = rounds.map((r) => Math.max(0, r.peersBackMs - r.takeoverMs));
    const noisy = !runs.some((w) => w.quiet);
    const counted = runs.filter((w) => w.quiet || noisy);
    const loneMedian = median(counted.filter((w) => w.setup === 'lone').map((w) => w.perSecond));
    const replMedian = median(counted.filter((w) => w.setup === 'replicated').map((w) => w.perSecond));
    const pairRatios: number[] = [];
    for (let pair = 1; pair <= opts.writeRuns; pair++) {
      const last = Math.max(...counted.filter((w) => w.pair === pair).map((w) => w.attempt));
      const inPair = counted.filter((w) => w.pair === pair && w.attempt === last);
      const lone = inPair.find((w) => w.setup === 'lone');
      const repl = inPair.find((w) => w.setup === 'replicated');
      if (lone && repl) pairRatios.push(repl.perSecond / lone.perSecond);
    }
    const report: Report = {
      benchmark: 'takeover',
      fault: opts.freeze ? 'SIGSTOP' : 'kill -9',
      settings: { heartbeatMs: opts.heartbeatMs, failoverMs: opts.failoverMs, peers: opts.peers, rounds: opts.rounds, writes: opts.writes, inFlight: opts.inFlight, writeRuns: opts.writeRuns, pollMs: opts.pollMs, waitQuietSeconds: opts.waitQuietSeconds },
      machine,
      code: codeVersion(),
      totalSeconds: (performance.now() - t0) / 1000,
      takeover: { medianMs: median(takeovers), p90Ms: percentile(takeovers, 90), maxMs: Math.max(...takeovers), minMs: Math.min(...takeovers) },
      peersBack: { medianMs: median(back), p90Ms: percentile(back, 90), maxMs: Math.max(...back), medianAfterTakeoverMs: median(after), maxAfterTakeoverMs: Math.max(...after) },
      restore: { medianMs: median(rounds.map((r) => r.restoreMs)), maxMs: Math.max(...rounds.map((r) => r.restoreMs)) },
      writes: { loneMedianPerSecond: loneMedian, replicatedMedianPerSecond: replMedian, ratio: replMedian / loneMedian, pairRatios, noisy, runs },
      targets: [],
      rounds,
    };
    report.targets = [
      {
        what: `median takeover under failover-ms + ${TAKEOVER_MARGIN_MS} ms = ${opts.failoverMs + TAKEOVER_MARGIN_MS} ms`,
        measured: `${fmt(report.takeover.medianMs)} ms`,
        met: report.takeover.medianMs < opts.failoverMs + TAKEOVER_MARGIN_MS,
      },
      {
        what: `every peer back with the new main within ${PEERS_BACK_MS / 1000} s of the kill, in every round`,
        measured: `max ${fmt(report.peersBack.maxMs)} ms`,
        met: report.peersBack.maxMs <= PEERS_BACK_MS,
      },
      {
        what: `replicated writes at least ${MIN_WRITE_RATIO} of a lone tracker's throughput`,
        measured: `${fmt(report.writes.ratio, 2)}`,
        met: report.writes.ratio >= MIN_WRITE_RATIO,
      },
    ];
    const md = markdown(report);
    process.stdout.write(`\n${md}`);
    if (opts.results) {
      await fsp.mkdir(opts.results, { recursive: true });
      // Microsecond precision is plenty for figures in milliseconds and seconds.
      const rounded = (_: string, v: unknown): unknown => (typeof v === 'number' && !Number.isInteger(v) ? Math.round(v * 1000) / 1000 : v);
      const base = opts.freeze ? 'takeover-freeze' : 'takeover';
      await fsp.writeFile(path.join(opts.results, `${base}.json`), `${JSON.stringify(report, rounded, 2)}\n`);
      await fsp.writeFile(path.join(opts.results, `${base}.md`), md);
      log(`wrote ${path.relative(process.cwd(), path.join(opts.results, `${base}.md`))} and ${base}.json`);
    }
  } finally {
    await ws.cleanup();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`takeover: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
