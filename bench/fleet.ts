#!/usr/bin/env node
/**
 * The fleet benchmark (`npm run bench:fleet`, issue 12): what one cluster of three real `p2p-tracker`
 * processes holds. For each fleet size of --peers, on fresh trackers (--metrics on each) and fresh worker
 * processes:
 *
 * 1. Sessions: every simulated peer connects, with no files yet (`--connect-window` dialling at a time per
 *    worker): sessions/s, and the trackers' RSS with sessions only.
 * 2. Registration: every peer announces its --files (`--register-window` at a time per worker); a
 *    REGISTER is acknowledged once committed on a backup too: peers/s, RSS after, bytes per holder entry.
 * 3. Steady load for --steady-s: lookups and searches at --lookup-rate and --search-rate (open loop,
 *    latency measured by the peer that asked), the peers' own heartbeats, and churn (--churn-rate peers/s
 *    leave and as many new ones join). CPU of every tracker and of the generator, replication lag.
 * 4. Takeover: kill -9 of the main under the same load; until a new main answers a LOOKUP (a fresh probe
 *    connection every 20 ms) and until every peer has re-registered with it, and lookup latency meanwhile.
 * 5. Takeback: the old main restarted on its --data; the same until it is main again and has every peer.
 *
 * Each simulated peer is the product's own TrackerClient (peerd/tracker-client.ts) with a real identity
 * of its own (bench/fleet/keys.ts, cached between runs) and the blacklist re-sync of every session: dialling, TLS,
 * the handshake, heartbeats, failover, back-off and re-registration are the product's and follow it when
 * it changes. The peers run in --workers child processes (bench/fleet/worker.ts).
 *
 * Prints a JSON summary on stdout. Writes bench/results/fleet.{md,svg,json} for a run of the default
 * sizes, or where --results says; a smaller run writes nothing else unless given --results.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { assertBuilt, benchFlags, codeVersion, intFlag, machineInfo, percentile, ROOT, sleep, until, Workspace } from './harness.js';
import { Generator, type Sample } from './fleet/generator.js';
import { OpKind, Outcome, epochMs } from './fleet/ipc.js';
import { ensureIdentities } from './fleet/keys.js';
import { markdown, svg, type FleetReport, type LatencyFigures, type SizeResult, type Transition } from './fleet/report.js';
import { FleetCluster, gauge, histogram, maxBackupLag, quantileBetween, type Histogram, type Metrics } from './fleet/trackers.js';
import { holderEntries, peerFiles, type WorkloadOptions } from './fleet/workload.js';

const PROGRAM = 'fleet';
const DEFAULT_PEERS = [1000, 5000, 20_000];
const CLUSTER_SIZE = 3;
/** A phase that takes longer than this has failed, not measured slow. */
const PHASE_TIMEOUT_MS = 30 * 60_000;
/** Before reading RSS: let the trackers' garbage collector catch up with what the phase left. */
const SETTLE_MS = 2000;
const PROBE_EVERY_MS = 20;
const METRICS_EVERY_MS = 1000;
/** After a takeover, no peer re-registering with the main for this long means the rest will not (they sit on a backup). */
const STALL_MS = 30_000;

interface Options {
  peers: number[];
  files: number;
  popularShare: number;
  popularPool: number;
  workers: number;
  steadyS: number;
  lookupRate: number;
  searchRate: number;
  searchLimit: number;
  /** Peers per second leaving and joining; undefined: 1% of the fleet per 10 s. */
  churnRate: number | undefined;
  connectWindow: number;
  registerWindow: number;
  transitionTimeoutS: number;
  heartbeatMs: number | undefined;
  failoverMs: number | undefined;
  leaseMs: number | undefined;
  /** The trackers' --peer-heartbeats-per-s (undefined: theirs). */
  peerHeartbeatsPerS: number | undefined;
  seed: number;
  peerLogs: number;
  /** Peers keep the product's BlacklistCache, not only its re-sync on each session. */
  blacklistCache: boolean;
  /** Kill the main and restart it after the steady load (--no-failover: stop there). */
  failover: boolean;
  trackerNodeArgs: string[];
  workerNodeArgs: string[];
  /** The workers' nice value: above 0 the trackers take the CPU first, as if the peers ran elsewhere. */
  workerNice: number;
  results: string | undefined;
  keep: boolean;
}

function parseOptions(): Options {
  const values = benchFlags(
    PROGRAM,
    'npm run bench:fleet',
    {
      peers: { type: 'string', default: DEFAULT_PEERS.join(',') },
      files: { type: 'string', default: '100' },
      'popular-share': { type: 'string', default: '0.1' },
      'popular-pool': { type: 'string', default: '1000' },
      workers: { type: 'string', default: '2' },
      'steady-s': { type: 'string', default: '20' },
      'lookup-rate': { type: 'string', default: '2000' },
      'search-rate': { type: 'string', default: '200' },
      'search-limit': { type: 'string', default: '10000' },
      'churn-rate': { type: 'string' },
      'connect-window': { type: 'string', default: '64' },
      'register-window': { type: 'string', default: '128' },
      'transition-timeout-s': { type: 'string', default: '180' },
      'heartbeat-ms': { type: 'string' },
      'failover-ms': { type: 'string' },
      'lease-ms': { type: 'string' },
      'peer-heartbeats-per-s': { type: 'string' },
      seed: { type: 'string', default: '12' },
      'peer-logs': { type: 'string', default: '0' },
      'tracker-node-args': { type: 'string', default: '' },
      'worker-node-args': { type: 'string', default: '' },
      'worker-nice': { type: 'string', default: '0' },
      results: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'no-failover': { type: 'boolean', default: false },
      'blacklist-cache': { type: 'boolean', default: false },
    },
    [
      'usage: npm run bench:fleet -- [--peers LIST] [--files N] [--workers N] [--steady-s S] [--lookup-rate N]',
      '                              [--search-rate N] [--churn-rate N] [--results DIR] [--keep] ...',
      '',
      `  --peers LIST            fleet sizes, one measurement each on fresh trackers (default ${DEFAULT_PEERS.join(',')})`,
      '  --files N               files each peer shares (default 100)',
      '  --popular-share X       share of them drawn from the popular pool (default 0.1)',
      '  --popular-pool N        files in the popular pool, held by many peers each (default 1000)',
      '  --workers N             processes the peers are spread over (default 2)',
      '  --steady-s S            seconds of steady load (default 20)',
      '  --lookup-rate N         LOOKUPs per second from the fleet, open loop (default 2000)',
      '  --search-rate N         SEARCHes per second (default 200)',
      "  --search-limit N        SEARCH's limit, as `p2p search` asks (default 10000)",
      '  --churn-rate N          peers per second that leave, and as many that join, during the steady',
      '                          load (default: 1% of the fleet per 10 s)',
      '  --connect-window N      peers of each worker dialling at once in the sessions phase (default 64)',
      '  --register-window N     peers of each worker registering at once (default 128)',
      '  --transition-timeout-s S  give up on a takeover or takeback after S seconds (default 180)',
      "  --heartbeat-ms N, --failover-ms N, --lease-ms N, --peer-heartbeats-per-s N   the trackers' flags",
      '                          (default: theirs; fewer heartbeats leave the generator CPU for the handshakes',
      '                          of a takeover or takeback at 5,000 peers on 2 cores)',
      '  --seed N                the workload (names, picks) follows from it (default 12)',
      '  --results DIR           where fleet.md, fleet.svg and fleet.json go (default bench/results for a',
      '                          run of the default sizes; otherwise only the JSON summary is printed)',
      "  --keep                  keep the temporary folder (every tracker's and worker's log)",
      "  --blacklist-cache       each peer keeps peerd's BlacklistCache (about 370 KB a peer in the workers);",
      '                          by default it sends only what that class sends the tracker (BLACKLIST_SYNC on each session)',
      '  --no-failover           stop after the steady load: no kill -9 of the main, no takeback (so that a',
      "                          profile of the main covers the steady load: the killed main writes none)",
      "  --peer-logs N           the first N peers of each worker log their tracker session (peerd's messages,",
      '                          info and up, one JSON line with the peer number) in worker-W.log; with --keep',
      '  --tracker-node-args="..."  node flags for the trackers, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" (a',
      '                          profile per tracker process, written when it stops; the killed main writes none)',
      '  --worker-node-args="..."   node flags for the generator\'s worker processes, the same way',
      '  --worker-nice N         run the workers at nice N (default 0, the trackers\' share): the simulated',
      '                          peers stand for machines of their own; at 10 the trackers take the CPU first',
      '',
    ],
  );
  const int = (flag: string, v: string, min = 1): number => intFlag(PROGRAM, flag, v, min);
  const optionalInt = (flag: string, v: string | undefined): number | undefined => (v === undefined ? undefined : int(flag, v, 1));
  const fraction = (flag: string, v: string): number => {
    const x = Number(v);
    if (!(x >= 0 && x <= 1)) {
      process.stderr.write(`${PROGRAM}: --${flag} must be a number from 0 to 1\n`);
      process.exit(2);
    }
    return x;
  };
  const rate = (flag: string, v: string): number => {
    const x = Number(v);
    if (!(x >= 0) || !Number.isFinite(x)) {
      process.stderr.write(`${PROGRAM}: --${flag} must be a number >= 0\n`);
      process.exit(2);
    }
    return x;
  };
  const peers = values.peers.split(',').map((p) => int('peers', p.trim(), 1));
  const opts: Options = {
    peers,
    files: int('files', values.files, 1),
    popularShare: fraction('popular-share', values['popular-share']),
    popularPool: int('popular-pool', values['popular-pool'], 1),
    workers: int('workers', values.workers, 1),
    steadyS: int('steady-s', values['steady-s'], 1),
    lookupRate: rate('lookup-rate', values['lookup-rate']),
    searchRate: rate('search-rate', values['search-rate']),
    searchLimit: int('search-limit', values['search-limit'], 1),
    churnRate: values['churn-rate'] === undefined ? undefined : rate('churn-rate', values['churn-rate']),
    connectWindow: int('connect-window', values['connect-window'], 1),
    registerWindow: int('register-window', values['register-window'], 1),
    transitionTimeoutS: int('transition-timeout-s', values['transition-timeout-s'], 1),
    heartbeatMs: optionalInt('heartbeat-ms', values['heartbeat-ms']),
    failoverMs: optionalInt('failover-ms', values['failover-ms']),
    leaseMs: optionalInt('lease-ms', values['lease-ms']),
    peerHeartbeatsPerS: optionalInt('peer-heartbeats-per-s', values['peer-heartbeats-per-s']),
    seed: int('seed', values.seed, 0),
    peerLogs: int('peer-logs', values['peer-logs'], 0),
    trackerNodeArgs: values['tracker-node-args'].split(' ').filter(Boolean),
    workerNodeArgs: values['worker-node-args'].split(' ').filter(Boolean),
    workerNice: int('worker-nice', values['worker-nice'], 0),
    failover: !values['no-failover'],
    blacklistCache: values['blacklist-cache'],
    results: values.results,
    keep: values.keep,
  };
  const defaultSizes = peers.join(',') === DEFAULT_PEERS.join(',');
  opts.results ??= defaultSizes ? path.join(ROOT, 'bench', 'results') : undefined;
  return opts;
}

function log(line: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

function churnRateFor(opts: Options, peers: number): number {
  return opts.churnRate ?? peers / 1000;
}

/** Peers that join during the churn of one fleet size (with a margin: the pacing rounds up). */
function sparesFor(opts: Options, peers: number): number {
  return Math.ceil(churnRateFor(opts, peers) * opts.steadyS * 1.1) + 10;
}

/** The open-file limit (soft, hard) of this process, from /proc/self/limits. */
function fileLimit(): { soft: number; hard: number } {
  const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files')) ?? '';
  const [soft, hard] = line.replace('Max open files', '').trim().split(/\s+/).map((v) => (v === 'unlimited' ? Infinity : Number(v)));
  return { soft: soft ?? 1024, hard: hard ?? 1024 };
}

/**
 * File descriptors a tracker needs beyond one per peer: its log, database, listening sockets, links to
 * the other trackers, the probes, and peers that hold a second connection for a moment while they move.
 */
const FD_HEADROOM = 2048;

/**
 * The main holds a socket per peer: the trackers and the workers inherit this process's open-file limit,
 * which is raised with prlimit where it is too low and that is allowed (root with CAP_SYS_RESOURCE).
 */
function ensureFileLimit(peers: number, spares: number, workers: number): void {
  // A worker's peer may hold two connections for a moment (to a backup, and to the main it names).
  const need = Math.max(peers + spares, 2 * Math.ceil((peers + spares) / workers)) + FD_HEADROOM;
  const before = fileLimit();
  if (before.soft >= need) return;
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${need}:${Math.max(before.hard, need)}`], { stdio: 'ignore' });
  } catch {
    // not allowed; said below
  }
  const after = fileLimit();
  if (after.soft < need) {
    const fits = after.soft - FD_HEADROOM - spares;
    process.stderr.write(
      `${PROGRAM}: ${peers} peers need about ${need} open files in the main tracker or a worker, but the limit here is ${after.soft} (hard ${after.hard}),\n` +
        'and it cannot be raised from here (prlimit needs root with CAP_SYS_RESOURCE to pass the hard limit).\n' +
        `Raise it where the benchmark starts (\`ulimit -n ${need}\` in a root shell; for a container, e.g. docker run --ulimit nofile=${need}),\n` +
        `or measure fleets of at most about ${fits} peers here (--peers; with --workers 2 or more).\n`,
    );
    process.exit(2);
  }
  log(`raised the open-file limit from ${before.soft} to ${after.soft} (prlimit) for the trackers and workers`);
}

function latency(samples: Sample[], seconds: number): LatencyFigures {
  const answered = samples.filter((s) => s.outcome !== Outcome.failed);
  const ms = answered.map((s) => s.ms);
  return {
    answered: answered.length,
    failed: samples.length - answered.length,
    notFound: samples.filter((s) => s.outcome === Outcome.notFound).length,
    perSecond: answered.length / seconds,
    p50Ms: percentile(ms, 50),
    p99Ms: percentile(ms, 99),
    p999Ms: percentile(ms, 99.9),
    maxMs: ms.length ? ms.reduce((a, b) => Math.max(a, b)) : NaN,
    meanCount: answered.length ? answered.reduce((s, x) => s + x.count, 0) / answered.length : NaN,
  };
}

/** CPU seconds of each tracker and of the generator (workers + this process), to take differences of. */
interface CpuMark {
  at: number;
  trackers: Array<number | undefined>;
  generator: number;
}

function cpuMark(cluster: FleetCluster, gen: Generator): CpuMark {
  const own = process.cpuUsage();
  return { at: epochMs(), trackers: cluster.usage().map((u) => u?.cpuSeconds), generator: gen.cpuSeconds() + (own.user + own.system) / 1e6 };
}

/** CPU % (of one core) between two marks; a tracker restarted in between counts from its restart. */
function cpuPercent(a: CpuMark, b: CpuMark): { trackers: Array<number | undefined>; generator: number } {
  const wall = (b.at - a.at) / 1000;
  return {
    trackers: b.trackers.map((t, i) => (t === undefined ? undefined : (100 * (t - (a.trackers[i] ?? 0))) / wall)),
    generator: (100 * (b.generator - a.generator)) / wall,
  };
}

/**
 * A takeover or takeback: from `since` (the kill or the restart), until one of `candidates` is main and
 * answers a LOOKUP on a fresh connection, and until every peer in the fleet has had a REGISTER
 * acknowledged by the main that stays and that main lists all their files. Load keeps running;
 * latencies are those of the window.
 */
async function transition(what: string, opts: Options, cluster: FleetCluster, gen: Generator, candidates: number[], since: number, probeId: Buffer): Promise<Transition> {
  const deadline = since + opts.transitionTimeoutS * 1000;
  const name = (rank: number): string => cluster.trackers[rank]!.name;
  const startMark = cpuMark(cluster, gen);
  const watch = cluster.watchMain(candidates, probeId, PROBE_EVERY_MS);
  try {
    const first = await watch.firstAnswer(deadline - epochMs());
    if (first) log(`${what}: ${name(first.rank)} main after ${(first.mainAt - since).toFixed(0)} ms, answered a LOOKUP after ${(first.answeredAt! - since).toFixed(0)} ms`);
    else log(`${what}: no tracker of ${candidates.map(name).join(', ')} answered a LOOKUP as main within ${opts.transitionTimeoutS} s`);
    // The main that stays is the one every peer ends up registered with. Peers that stop coming (no new
    // REGISTER acknowledged by the main for STALL_MS) will not come: the window ends there.
    let settled: { rank: number; lastAt: number } | undefined;
    let progress = { count: -1, holders: -1, at: epochMs() };
    const expectedHolders = gen.live.size * opts.files;
    let stalled = false;
    // Every peer has a session with the main and it lists all their files: from then on a downloader finds
    // every holder, whatever the peers' own REGISTERs are still waiting for.
    let listed: number | undefined;
    let notListedAt = since;
    while (first && !settled && !stalled && epochMs() < deadline) {
      await sleep(100);
      await gen.flush();
      for (const rank of candidates) {
        const reg = gen.registeredWith(rank, since);
        if (!watch.spell(rank)) continue;
        const sessions = gen.sessionsWith(rank, since);
        if (listed === undefined && sessions.count >= gen.live.size) {
          const listing = await cluster.metrics(rank).then((m) => gauge(m, 'p2p_tracker_holder_entries') ?? 0, () => 0);
          if (listing >= expectedHolders) listed = Math.max(sessions.lastAt, notListedAt) - since;
          else notListedAt = epochMs();
        }
        // Every peer acknowledged since the kill, and the main lists every holder entry: a main that lost
        // command in between, or swept peers it thought gone, may have dropped some acknowledged earlier.
        const holders = reg.count >= gen.live.size ? await cluster.metrics(rank).then((m) => gauge(m, 'p2p_tracker_holder_entries') ?? 0, () => 0) : 0;
        if (holders >= expectedHolders) settled = { rank, lastAt: reg.lastAt };
        if (reg.count !== progress.count || holders !== progress.holders) progress = { count: reg.count, holders, at: epochMs() };
        stalled = epochMs() - progress.at > STALL_MS;
      }
    }
    const rank = settled?.rank ?? candidates.find((r) => watch.spell(r)) ?? first?.rank;
    const end = settled?.lastAt ?? epochMs();
    const spell = rank === undefined ? undefined : watch.spell(rank);
    const reg = rank === undefined ? { count: 0, lastAt: 0 } : gen.registeredWith(rank, since);
    // What a downloader would find: the holders the main lists (a peer left on a backup is dropped by the main after a lease).
    const mainMetrics = rank === undefined ? undefined : await cluster.metrics(rank).catch(() => undefined);
    const sessions = rank === undefined ? { count: 0, lastAt: 0 } : gen.sessionsWith(rank, since);
    const result: Transition = {
      newMain: rank === undefined ? undefined : name(rank),
      firstMain: first ? name(first.rank) : undefined,
      firstLookupMs: first ? first.answeredAt! - since : NaN,
      peersFirstLookupMs: firstAnswered(gen.samplesBetween(OpKind.lookup, since, end), since),
      mainChanges: watch.changes,
      mainMs: spell ? spell.mainAt - since : NaN,
      lookupMs: spell?.answeredAt !== undefined ? spell.answeredAt - since : NaN,
      sessionsMs: sessions.count >= gen.live.size ? sessions.lastAt - since : NaN,
      listedMs: listed ?? NaN,
      registeredMs: settled ? settled.lastAt - since : NaN,
      peersBack: reg.count,
      peers: gen.live.size,
      stragglers: rank === undefined ? { byTracker: {}, examples: [] } : gen.stragglers(rank, since, cluster.trackers.map((t) => t.name)),
      whereabouts: await gen.whereabouts(cluster.trackers.map((t) => t.name)),
      holderEntries: (mainMetrics && gauge(mainMetrics, 'p2p_tracker_holder_entries')) ?? NaN,
      expectedHolderEntries: expectedHolders,
      lookups: latency(gen.samplesBetween(OpKind.lookup, since, end), Math.max(0.001, (end - since) / 1000)),
      errors: mergeErrors(gen.countersBetween(since, end + 1000).map((c) => c.errors)),
      cpuPercent: cpuPercent(startMark, cpuMark(cluster, gen)),
      windowMs: end - since,
      stalled,
    };
    const changed = result.mainChanges > 0 ? ` (the probes saw ${result.mainChanges} later spells as main; ${result.newMain} stayed, main after ${result.mainMs.toFixed(0)} ms)` : '';
    log(
      `${what}: a peer's first LOOKUP sent since answered after ${result.peersFirstLookupMs.toFixed(0)} ms; every peer back with ${result.newMain} and all their files listed after ${result.listedMs.toFixed(0)} ms; ` +
        `every peer re-registered after ${result.registeredMs.toFixed(0)} ms (${reg.count}/${gen.live.size})${changed}; ` +
        `lookups meanwhile p99 ${result.lookups.p99Ms.toFixed(0)} ms, max ${result.lookups.maxMs.toFixed(0)} ms, ${result.lookups.failed} failed` +
        (reg.count < gen.live.size
          ? `; not re-registered, by the tracker of their latest session: ${JSON.stringify(result.stragglers)}; every peer's session now (tracker role state): ${JSON.stringify(result.whereabouts)}`
          : ''),
    );
    return result;
  } finally {
    watch.stop();
  }
}

/** Ms from `since` until the first of `samples` sent after it was answered (NaN: none was). */
function firstAnswered(samples: ReadonlyArray<{ at: number; ms: number; outcome: number }>, since: number): number {
  let first = Infinity;
  for (const s of samples) if (s.outcome === Outcome.ok && s.at - s.ms >= since && s.at < first) first = s.at;
  return Number.isFinite(first) ? first - since : NaN;
}

/** What every phase of one fleet size works with. */
interface Run {
  opts: Options;
  peers: number;
  workload: WorkloadOptions;
  cluster: FleetCluster;
  gen: Generator;
}

/** 1. Every peer connects with no files: sessions/s, and the trackers' RSS with sessions only. */
/** One tracker's JS heap in use (live objects and garbage not yet collected), the heap V8 holds, and memory outside it (buffers). */
interface HeapFigures {
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
}

/** Where each tracker's RSS is, from its own metrics (prom-client's defaults); NaN where a scrape fails. */
function heapFigures(cluster: FleetCluster): Promise<HeapFigures[]> {
  return Promise.all(
    cluster.trackers.map(async (_, i) => {
      const m = await cluster.metrics(i).catch(() => undefined);
      const read = (name: string): number => (m && gauge(m, name)) ?? NaN;
      return { heapUsedBytes: read('nodejs_heap_size_used_bytes'), heapTotalBytes: read('nodejs_heap_size_total_bytes'), externalBytes: read('nodejs_external_memory_bytes') };
    }),
  );
}

async function sessionsPhase({ opts, peers, cluster, gen }: Run): Promise<{ connect: SizeResult['connect']; withSessions: ReturnType<FleetCluster['usage']>; sessionHeaps: HeapFigures[] }> {
  const mark = cpuMark(cluster, gen);
  const t0 = epochMs();
  await withTimeout('every peer connected', gen.connect(opts.connectWindow));
  const seconds = (epochMs() - t0) / 1000;
  const cpu = cpuPercent(mark, cpuMark(cluster, gen));
  const mainPeerSessions = gauge(await cluster.metrics(0), 'p2p_tracker_sessions', { role: 'peer' }) ?? NaN;
  log(`${peers} peers: sessions up in ${seconds.toFixed(1)} s (${(peers / seconds).toFixed(0)}/s; the main counts ${mainPeerSessions} peer sessions)`);
  await sleep(SETTLE_MS);
  return { connect: { seconds, perSecond: peers / seconds, cpuPercent: cpu, mainPeerSessions }, withSessions: cluster.usage(), sessionHeaps: await heapFigures(cluster) };
}

/**
 * 2. Every peer announces its files: peers/s until the last REGISTER acknowledged, then (the backups
 * caught up) each tracker's RSS and what it grew by per holder entry.
 */
async function registrationPhase(
  { opts, peers, workload, cluster, gen }: Run,
  empty: ReturnType<FleetCluster['usage']>,
  withSessions: ReturnType<FleetCluster['usage']>,
  sessionHeaps: HeapFigures[],
): Promise<Pick<SizeResult, 'register' | 'memory' | 'holderEntries'>> {
  const mark = cpuMark(cluster, gen);
  const t0 = epochMs();
  const failures = await withTimeout('every peer registered', gen.register(opts.registerWindow));
  await gen.flush();
  const acked = gen.registeredWith(0, t0);
  const seconds = (acked.lastAt - t0) / 1000;
  const cpuSpent = cpuMark(cluster, gen).trackers.map((c, i) => (c ?? 0) - (mark.trackers[i] ?? 0));
  await until('the backups to apply every registration', async () => maxBackupLag(await cluster.metrics(0)) === 0, 120_000, 250).catch(() => log('warning: the backups still lag after 120 s'));
  await sleep(SETTLE_MS);
  const registered = cluster.usage();
  const holders = gauge(await cluster.metrics(0), 'p2p_tracker_holder_entries') ?? NaN;
  const heaps = await heapFigures(cluster);
  log(
    `${peers} peers: ${acked.count} registered in ${seconds.toFixed(1)} s (${(acked.count / seconds).toFixed(0)} peers/s), ` +
      `${holders} holder entries on the main (expected ${holderEntries(workload, peers)}), ${failures} could not`,
  );
  const rss = (u: ReturnType<FleetCluster['usage']>, i: number): number => u[i]?.rssBytes ?? NaN;
  return {
    holderEntries: holders,
    register: { seconds, perSecond: acked.count / seconds, filesPerSecond: (acked.count * opts.files) / seconds, failures, registered: acked.count },
    memory: cluster.trackers.map((t, i) => ({
      tracker: t.name,
      role: i === 0 ? 'main' : 'backup',
      emptyBytes: rss(empty, i),
      sessionsBytes: rss(withSessions, i),
      registeredBytes: rss(registered, i),
      bytesPerHolder: (rss(registered, i) - rss(withSessions, i)) / holders,
      totalBytesPerHolder: rss(registered, i) / holders,
      registerCpuMsPerPeer: (1000 * cpuSpent[i]!) / peers,
      ...heaps[i]!,
      sessionsHeapUsedBytes: sessionHeaps[i]?.heapUsedBytes ?? NaN,
      sessionsHeapTotalBytes: sessionHeaps[i]?.heapTotalBytes ?? NaN,
      sessionsExternalBytes: sessionHeaps[i]?.externalBytes ?? NaN,
    })),
  };
}

/** 3. Lookups, searches and churn for --steady-s, the peers' heartbeats beside them. The load keeps running after. */
async function steadyPhase({ opts, peers, cluster, gen }: Run): Promise<SizeResult['steady']> {
  const churnRate = churnRateFor(opts, peers);
  log(`${peers} peers: steady load for ${opts.steadyS} s: ${opts.lookupRate} lookups/s, ${opts.searchRate} searches/s, churn ${churnRate} peers/s`);
  const metricsBefore = await cluster.metrics(0);
  const mark = cpuMark(cluster, gen);
  const from = epochMs();
  gen.load(opts.lookupRate, opts.searchRate, opts.searchLimit);
  gen.churn(churnRate);
  let maxLag = 0;
  while (epochMs() - from < opts.steadyS * 1000) {
    await sleep(Math.min(METRICS_EVERY_MS, opts.steadyS * 1000 - (epochMs() - from)));
    maxLag = Math.max(maxLag, await cluster.metrics(0).then(maxBackupLag, () => 0));
  }
  gen.churn(0);
  const to = epochMs();
  await gen.flush();
  const cpu = cpuPercent(mark, cpuMark(cluster, gen));
  const metricsAfter = await cluster.metrics(0);
  const seconds = (to - from) / 1000;
  const counters = gen.countersBetween(from, to + 1000);
  const sum = (f: (c: (typeof counters)[number]) => number): number => counters.reduce((n, c) => n + f(c), 0);
  const [before, after] = [histograms(metricsBefore), histograms(metricsAfter)];
  const mainHeartbeats = (gauge(metricsAfter, 'p2p_tracker_heartbeats_total') ?? NaN) - (gauge(metricsBefore, 'p2p_tracker_heartbeats_total') ?? NaN);
  const steady: SizeResult['steady'] = {
    seconds,
    lookups: latency(gen.samplesBetween(OpKind.lookup, from, to), seconds),
    searches: latency(gen.samplesBetween(OpKind.search, from, to), seconds),
    heartbeatsPerSecond: sum((c) => c.pongs) / seconds,
    // The main's own count, where it keeps one (NaN otherwise).
    mainHeartbeatsPerSecond: mainHeartbeats / seconds,
    heartbeatsMissed: sum((c) => c.pingFailures),
    sessionsLost: sum((c) => c.sessionsLost),
    skipped: sum((c) => c.skipped),
    errors: mergeErrors(counters.map((c) => c.errors)),
    generatorLoopDelayP99Ms: Math.max(0, ...counters.map((c) => c.loopDelayP99Ms)),
    generatorRssBytes: gen.rssBytes(),
    cpuPercent: cpu,
    maxBackupLagEntries: maxLag,
    commitP99Ms: 1000 * quantileBetween(before.commit, after.commit, 0.99),
    serverLookupP99Ms: 1000 * quantileBetween(before.lookup, after.lookup, 0.99),
    serverSearchP99Ms: 1000 * quantileBetween(before.search, after.search, 0.99),
    serverLookupWaitP99Ms: 1000 * quantileBetween(before.lookupWait, after.lookupWait, 0.99),
    serverSearchWaitP99Ms: 1000 * quantileBetween(before.searchWait, after.searchWait, 0.99),
    churnPerSecond: churnRate,
    left: gen.left,
    joined: gen.joined,
  };
  log(
    `${peers} peers: steady: lookups p50 ${steady.lookups.p50Ms.toFixed(1)} p99 ${steady.lookups.p99Ms.toFixed(1)} ms (${steady.lookups.perSecond.toFixed(0)}/s), ` +
      `searches p50 ${steady.searches.p50Ms.toFixed(1)} p99 ${steady.searches.p99Ms.toFixed(1)} ms (${steady.searches.perSecond.toFixed(0)}/s), ` +
      `heartbeats ${steady.heartbeatsPerSecond.toFixed(0)}/s (${steady.heartbeatsMissed} missed), ${steady.sessionsLost} sessions lost; ` +
      `CPU % main ${fmtPct(cpu.trackers[0])}, backups ${fmtPct(cpu.trackers[1])} ${fmtPct(cpu.trackers[2])}, generator ${cpu.generator.toFixed(0)}`,
  );
  // The joiners' registrations and the leavers' drops finish before what comes next.
  await until('the churn to settle', async () => {
    await gen.flush();
    return gen.registeredWith(0, 0).count >= gen.live.size;
  }, 60_000, 200).catch(() => log('warning: some peers that joined are not registered yet'));
  return steady;
}

/** 4 and 5. kill -9 of the main under load, then its restart on its own --data. */
async function failoverPhases(run: Run): Promise<{ takeover: Transition; takeback: Transition }> {
  const { opts, peers, workload, cluster, gen } = run;
  const main = cluster.trackers[0]!;
  // A file some peer holds (peer 0's first, a popular one): the probe's LOOKUP finds holders.
  const probeId = peerFiles(workload, 0)[0]!.id;
  await sleep(1000);
  const killedAt = epochMs();
  await main.kill9();
  log(`${peers} peers: killed the main (${main.name}) with SIGKILL`);
  const takeover = await transition('takeover', opts, cluster, gen, [1, 2], killedAt, probeId);
  await sleep(SETTLE_MS);
  const restartedAt = epochMs();
  main.start();
  log(`${peers} peers: restarted ${main.name}`);
  const takeback = await transition('takeback', opts, cluster, gen, [0], restartedAt, probeId);
  return { takeover, takeback };
}

/** One fleet size on fresh trackers and fresh workers, every phase in turn. */
async function measureSize(ws: Workspace, opts: Options, peers: number): Promise<SizeResult> {
  const workload: WorkloadOptions = { seed: opts.seed, filesPerPeer: opts.files, popularShare: opts.popularShare, popularPool: opts.popularPool };
  const spares = sparesFor(opts, peers);
  const cluster = await FleetCluster.start(ws, `p${peers}`, {
    size: CLUSTER_SIZE,
    maxConnections: 2 * (peers + spares) + 1000,
    heartbeatMs: opts.heartbeatMs,
    failoverMs: opts.failoverMs,
    leaseMs: opts.leaseMs,
    peerHeartbeatsPerS: opts.peerHeartbeatsPerS,
    nodeArgs: opts.trackerNodeArgs,
  });
  let gen: Generator | undefined;
  try {
    const empty = cluster.usage();
    log(`${peers} peers: trackers ${cluster.addresses.join(', ')} up (main ${cluster.trackers[0]!.name}); starting ${opts.workers} workers`);
    const loadStarted = performance.now();
    gen = await Generator.start({ workers: opts.workers, trackers: cluster.addresses, peers, spares, workload, logDir: ws.dir, peerLogs: opts.peerLogs, productBlacklistCache: opts.blacklistCache, nodeArgs: opts.workerNodeArgs, nice: opts.workerNice });
    const workersReadyS = (performance.now() - loadStarted) / 1000;
    const run: Run = { opts, peers, workload, cluster, gen };

    const { connect, withSessions, sessionHeaps } = await sessionsPhase(run);
    const registration = await registrationPhase(run, empty, withSessions, sessionHeaps);
    const steady = await steadyPhase(run);
    const failover = opts.failover ? await failoverPhases(run) : {};

    gen.load(0, 0, opts.searchLimit);
    await sleep(SETTLE_MS);
    const heartbeatsAtRest = opts.failover ? await heartbeatRates(cluster, 10) : undefined;
    const hashes = await until('every tracker to hold the same state', async () => {
      const h = await cluster.hashes();
      return h.every((x) => x === h[0]) ? h : undefined;
    }, 60_000, 1000).catch(() => undefined);
    return { peers, filesPerPeer: opts.files, workersReadyS, connect, ...registration, steady, ...failover, ...(heartbeatsAtRest ? { heartbeatsAtRest } : {}), statesIdentical: hashes !== undefined };
  } finally {
    if (gen && opts.workerNodeArgs.length > 0) await gen.close();
    gen?.stop();
    await cluster.stop();
  }
}

/** PINGs each tracker answers per second over `seconds` (undefined for a tracker whose metrics did not answer). */
async function heartbeatRates(cluster: FleetCluster, seconds: number): Promise<Array<number | undefined>> {
  const count = (rank: number): Promise<number | undefined> => cluster.metrics(rank).then((m) => gauge(m, 'p2p_tracker_heartbeats_total'), () => undefined);
  const ranks = cluster.trackers.map((_, i) => i);
  const before = await Promise.all(ranks.map(count));
  await sleep(seconds * 1000);
  const after = await Promise.all(ranks.map(count));
  return ranks.map((i) => (before[i] === undefined || after[i] === undefined ? undefined : (after[i]! - before[i]!) / seconds));
}

function histograms(m: Metrics): { lookup: Histogram; search: Histogram; lookupWait: Histogram; searchWait: Histogram; commit: Histogram } {
  return {
    lookup: histogram(m, 'p2p_tracker_lookup_duration_seconds'),
    search: histogram(m, 'p2p_tracker_search_duration_seconds'),
    // How long they waited for their turn on the main (its request gate): lookups wait in the 'ordinary' line.
    lookupWait: histogram(m, 'p2p_tracker_request_wait_seconds', { class: 'ordinary' }),
    searchWait: histogram(m, 'p2p_tracker_request_wait_seconds', { class: 'heavy' }),
    commit: histogram(m, 'p2p_tracker_write_commit_seconds'),
  };
}

function mergeErrors(list: Array<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of list) for (const [k, v] of Object.entries(e)) out[k] = (out[k] ?? 0) + v;
  return out;
}

function fmtPct(v: number | undefined): string {
  return v === undefined ? '-' : v.toFixed(0);
}

async function withTimeout<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const gaveUp = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${PHASE_TIMEOUT_MS / 60_000} minutes`)), PHASE_TIMEOUT_MS);
  });
  try {
    return await Promise.race([p, gaveUp]);
  } finally {
    clearTimeout(timer);
  }
}

async function main(): Promise<void> {
  const opts = parseOptions();
  assertBuilt();
  const largest = Math.max(...opts.peers);
  ensureFileLimit(largest, sparesFor(opts, largest), opts.workers);
  await ensureIdentities(Math.max(...opts.peers.map((p) => p + sparesFor(opts, p))), log);
  const machine = machineInfo();
  const started = performance.now();
  const ws = await Workspace.create('p2p-fleet', opts.keep);
  const sizes: SizeResult[] = [];
  try {
    for (const peers of opts.peers) sizes.push(await measureSize(ws, opts, peers));
  } finally {
    await ws.cleanup();
  }
  const report: FleetReport = {
    benchmark: 'fleet',
    command: `npm run bench:fleet${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    settings: { ...opts, churnRate: opts.churnRate ?? '1% of the fleet per 10 s', results: undefined, keep: undefined },
    machine,
    code: codeVersion(),
    totalSeconds: (performance.now() - started) / 1000,
    sizes,
  };
  // Microsecond precision is plenty for figures in milliseconds and seconds.
  const rounded = (_: string, v: unknown): unknown => (typeof v === 'number' && !Number.isInteger(v) ? Math.round(v * 1000) / 1000 : v);
  const json = JSON.stringify(report, rounded, 2);
  process.stdout.write(`${json}\n`);
  if (opts.results) {
    await fsp.mkdir(opts.results, { recursive: true });
    await fsp.writeFile(path.join(opts.results, 'fleet.json'), `${json}\n`);
    await fsp.writeFile(path.join(opts.results, 'fleet.md'), markdown(report));
    await fsp.writeFile(path.join(opts.results, 'fleet.svg'), svg(report));
    log(`wrote ${path.relative(process.cwd(), path.join(opts.results, 'fleet.md'))}, fleet.svg and fleet.json`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${PROGRAM}: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
