#!/usr/bin/env node
/**
 * The loopback benchmark (`npm run bench`): the real programs on 127.0.0.1 in a temporary folder. One
 * tracker, seeders holding a generated file (hard links of one file, so they share the page cache), and a
 * downloading p2p-peerd driven by `p2p get --json`. Scenarios: the baseline (bench/baseline.ts), a
 * download from 1 peer, and from 4 peers, each `--runs` times. For each download: wall time and MiB/s,
 * the downloading daemon's CPU seconds per GiB (/proc/PID/stat) and its peak RSS (VmRSS sampled every 50 ms,
 * and VmHWM of a daemon started fresh for each scenario). Writes bench/results/loopback.{json,md}.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { runBaseline, type BaselineResult } from './baseline.js';
import { curlNginxAvailable, runCurlNginx, startNginx, type CurlNginxResult } from './curl-nginx.js';
import {
  assertBuilt,
  benchFlags,
  codeVersion,
  cpuSeconds,
  cpuTimes,
  generateFile,
  GIB,
  intFlag,
  machineBusySeconds,
  machineInfo,
  median,
  memoryBytes,
  MIB,
  ownCpuSeconds,
  p2p,
  p2pJson,
  ROOT,
  RssSampler,
  waitQuiet,
  Workspace,
  type Started,
} from './harness.js';
import { linkInto, startPeer, startTracker, waitHolders, waitReady, type GetResult, type Peer } from './swarm.js';

/** The issue's targets. */
/** Issue 8: from 1 seeder and from 4, at least this share of the baseline's rate, `p2p get`'s wall time included. */
const TARGET_RATIO = 0.8;
/** Issue 8: the downloading daemon's and each seeder's peak RSS. */
const TARGET_PEAK_RSS_BYTES = 120e6;
const TARGET_SEEDER_RSS_BYTES = 100e6;
const FULL_SIZE_MIB = 1024;

interface Options {
  sizeMiB: number;
  runs: number;
  peers: number[];
  results: string | undefined;
  keep: boolean;
  downloaderNodeArgs: string[];
  seederNodeArgs: string[];
  warmup: number;
  waitQuietSeconds: number;
  /** Chunk links to measure: in TLS (the default), and plain (both sides with --plain-chunk-links). */
  links: LinkMode[];
}

type LinkMode = 'tls' | 'plain';

interface RunRecord {
  run: number;
  bytes: number;
  /** The download as the daemon timed it (`get --json` seconds): lookup to verified, synced, renamed file. */
  seconds: number;
  /** Around the whole `p2p get` process, including its start and the name lookup. */
  wallSeconds: number;
  mibPerSec: number;
  cpuSeconds: number;
  cpuSecondsPerGiB: number;
  /** The kernel's part of cpuSeconds (socket reads, page cache writes, syncs). */
  cpuSystemSecondsPerGiB: number;
  /** VmRSS sampled every 50 ms during this download. */
  peakRssBytes: number;
  /** CPU seconds of all the sending processes together, per GiB. */
  senderCpuSecondsPerGiB: number;
  /** CPU seconds other processes on this machine used during the run (a shared machine makes noise). */
  otherCpuSeconds: number;
  /** The wall time over which otherCpuSeconds was measured. */
  windowSeconds: number;
  receiveSeconds?: number;
  perPeerBytes?: Array<{ address: string; bytes: number; chunks: number }>;
}

interface ScenarioResult {
  key: string;
  title: string;
  holders: number;
  runs: RunRecord[];
  medianMiBPerSec: number;
  ratioToBaseline: number;
  /** The same by wall time: for p2p, around the whole `p2p get` process (its start included). */
  wallRatioToBaseline: number;
  medianSeconds: number;
  medianWallSeconds: number;
  medianCpuSecondsPerGiB: number;
  medianSenderCpuSecondsPerGiB: number;
  /** The largest of the sampled peaks and, for p2p scenarios, the downloader's VmHWM (it lived for this scenario only). */
  peakRssBytes: number;
}

function parseOptions(): Options {
  const values = benchFlags(
    'loopback',
    'npm run bench',
    {
      'size-mib': { type: 'string', default: String(FULL_SIZE_MIB) },
      runs: { type: 'string', default: '3' },
      peers: { type: 'string', default: '1,4' },
      results: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'downloader-node-args': { type: 'string', default: '' },
      'seeder-node-args': { type: 'string', default: '' },
      warmup: { type: 'string', default: '1' },
      'wait-quiet': { type: 'string', default: '0' },
      links: { type: 'string', default: 'tls,plain' },
    },
    [
      'usage: npm run bench -- [--size-mib N] [--runs N] [--peers 1,4] [--results DIR] [--keep]',
      '',
      '  --size-mib N   size of the generated file (default 1024 = 1 GiB)',
      '  --runs N       downloads per scenario; the table shows medians (default 3)',
      '  --peers LIST   seeder counts to download from (default 1,4)',
      '  --results DIR  where loopback.json and loopback.md go (default bench/results for a full-size',
      '                 run; a smaller run only prints its table unless --results is given)',
      '  --keep         keep the temporary folder (logs of every process) for inspection',
      '  --warmup N     untimed baseline transfers first (default 1; see bench/README.md)',
      '  --wait-quiet S on a shared machine, before each round wait up to S seconds for other work to',
      '                 drop below 10% of the CPUs (default 0: do not wait)',
      '  --links LIST   chunk links to measure: tls (the default setting), plain (downloader and seeders',
      '                 with --plain-chunk-links); default tls,plain',
      '  --downloader-node-args=ARGS',
      '                 node flags for the downloading daemons only, to investigate a result, e.g.',
      '                 --downloader-node-args="--cpu-prof --cpu-prof-dir=/tmp/prof" or ="--trace-gc"',
      '                 (--trace-gc output goes to the daemon\'s log: use --keep)',
      '  --seeder-node-args=ARGS',
      '                 the same for the seeding daemons (a seeder\'s profile: --cpu-prof ...)',
      '',
    ],
  );
  const int = (flag: string, v: string, min = 1): number => intFlag('loopback', flag, v, min);
  const sizeMiB = int('size-mib', values['size-mib'], 1);
  const peers = values.peers.split(',').map((p) => int('peers', p.trim(), 1));
  const links = [...new Set(values.links.split(',').map((l) => l.trim()))];
  for (const l of links) if (l !== 'tls' && l !== 'plain') {
    process.stderr.write(`loopback: --links: '${l}' is neither tls nor plain\n`);
    process.exit(2);
  }
  const results = values.results ?? (sizeMiB === FULL_SIZE_MIB ? path.join(ROOT, 'bench', 'results') : undefined);
  return {
    sizeMiB,
    runs: int('runs', values.runs, 1),
    peers: [...new Set(peers)].sort((a, b) => a - b),
    results,
    keep: values.keep,
    warmup: int('warmup', values.warmup, 0),
    waitQuietSeconds: int('wait-quiet', values['wait-quiet'], 0),
    downloaderNodeArgs: values['downloader-node-args'].split(/\s+/).filter(Boolean),
    seederNodeArgs: values['seeder-node-args'].split(/\s+/).filter(Boolean),
    links: links as LinkMode[],
  };
}

/** `peers-4` (chunk links in TLS, the default) or `peers-4-plain` (--plain-chunk-links on both sides). */
function scenarioKey(holders: number, link: LinkMode): string {
  return link === 'plain' ? `peers-${holders}-plain` : `peers-${holders}`;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function cpuSum(procs: Started[]): number {
  return procs.reduce((sum, p) => sum + cpuSeconds(p.pid), 0);
}

/** One download through `p2p get`, measured on the downloading daemon; `tracker` only counts toward our own CPU. */
async function download(downloader: Peer, seeders: Peer[], tracker: Started, id: string, out: string, run: number): Promise<RunRecord> {
  const pid = downloader.proc.pid;
  const senders = seeders.map((s) => s.proc);
  const cpuBefore = cpuTimes(pid);
  const sendersBefore = cpuSum(senders);
  const machineBefore = machineBusySeconds();
  const oursBefore = cpuSum([tracker]) + ownCpuSeconds();
  const windowStart = performance.now();
  const rss = new RssSampler(pid, 50);
  let result: { value: GetResult; wallSeconds: number };
  let peakRssBytes = 0;
  try {
    result = await p2pJson<GetResult>(downloader.socket, ['get', id, '--out', out, '--overwrite', '--no-progress'], 1_800_000);
  } finally {
    peakRssBytes = rss.stop();
  }
  const cpuAfter = cpuTimes(pid);
  const cpu = cpuAfter.user + cpuAfter.system - cpuBefore.user - cpuBefore.system;
  const senderCpu = cpuSum(senders) - sendersBefore;
  // What is left of the machine's busy time after ours (the `p2p` process is in ownCpuSeconds: it has exited).
  const otherCpuSeconds = Math.max(0, machineBusySeconds() - machineBefore - cpu - senderCpu - (cpuSum([tracker]) + ownCpuSeconds() - oursBefore));
  const windowSeconds = (performance.now() - windowStart) / 1000;
  const r = result.value;
  // Stop sharing the copy and delete it, so the next run starts from nothing.
  await p2p(downloader.socket, ['unshare', r.id], 10_000);
  await fsp.rm(r.path, { force: true });
  // The daemon's time (`get --json` seconds) gives the rate; the whole `p2p get` process its wall time.
  const transfer = { bytes: r.size, seconds: r.seconds, cpuSeconds: cpu, cpuSystemSeconds: cpuAfter.system - cpuBefore.system, peakRssBytes, senderCpuSeconds: senderCpu, otherCpuSeconds, windowSeconds };
  return {
    ...transferRecord(transfer, run),
    wallSeconds: result.wallSeconds,
    perPeerBytes: r.peers.map((p) => ({ address: p.address, bytes: p.bytes, chunks: p.chunks })),
  };
}

/** What was measured around one transfer: a p2p download, the baseline, curl from nginx. */
interface Transfer {
  bytes: number;
  seconds: number;
  cpuSeconds: number;
  cpuSystemSeconds?: number;
  peakRssBytes?: number;
  senderCpuSeconds: number;
  otherCpuSeconds?: number;
  windowSeconds?: number;
  receiveSeconds?: number;
}

/**
 * A transfer's record: its rate and CPU seconds per GiB. Its wall time is its time, as for a transfer
 * measured outside p2p; a p2p download replaces it with the whole `p2p get` process's.
 */
function transferRecord(x: Transfer, run: number): RunRecord {
  const gib = x.bytes / GIB;
  return {
    run,
    bytes: x.bytes,
    seconds: x.seconds,
    wallSeconds: x.seconds,
    mibPerSec: x.bytes / MIB / x.seconds,
    cpuSeconds: x.cpuSeconds,
    cpuSecondsPerGiB: x.cpuSeconds / gib,
    cpuSystemSecondsPerGiB: (x.cpuSystemSeconds ?? NaN) / gib,
    peakRssBytes: x.peakRssBytes ?? NaN,
    senderCpuSecondsPerGiB: x.senderCpuSeconds / gib,
    otherCpuSeconds: x.otherCpuSeconds ?? 0,
    windowSeconds: x.windowSeconds ?? x.seconds,
    ...(x.receiveSeconds !== undefined ? { receiveSeconds: x.receiveSeconds } : {}),
  };
}

const baselineRecord = (b: BaselineResult, run: number): RunRecord => transferRecord(b, run);
const curlRecord = (c: CurlNginxResult, run: number): RunRecord => transferRecord({ ...c, senderCpuSeconds: c.serverCpuSeconds }, run);

function summarize(key: string, title: string, holders: number, runs: RunRecord[], baselineMiBPerSec: number, extraPeakBytes = 0): ScenarioResult {
  const medianMiBPerSec = median(runs.map((r) => r.mibPerSec));
  return {
    key,
    title,
    holders,
    runs,
    medianMiBPerSec,
    ratioToBaseline: medianMiBPerSec / baselineMiBPerSec,
    wallRatioToBaseline: median(runs.map((r) => r.bytes / MIB / r.wallSeconds)) / baselineMiBPerSec,
    medianSeconds: median(runs.map((r) => r.seconds)),
    medianWallSeconds: median(runs.map((r) => r.wallSeconds)),
    medianCpuSecondsPerGiB: median(runs.map((r) => r.cpuSecondsPerGiB)),
    medianSenderCpuSecondsPerGiB: median(runs.map((r) => r.senderCpuSecondsPerGiB)),
    peakRssBytes: Math.max(extraPeakBytes, ...runs.map((r) => r.peakRssBytes)),
  };
}

function fmt(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

function markdown(report: Report): string {
  const m = report.machine;
  const rows = report.scenarios.map(
    (s) =>
      `| ${s.title} | ${s.runs.length} | ${fmt(s.medianMiBPerSec, 0)} | ${fmt(s.ratioToBaseline, 2)} | ${fmt(s.wallRatioToBaseline, 2)} | ${fmt(s.medianSeconds, 2)} | ${fmt(s.medianCpuSecondsPerGiB, 2)} | ${fmt(s.peakRssBytes / 1e6, 0)} | ${fmt(s.medianSenderCpuSecondsPerGiB, 2)} |`,
  );
  const bg = report.background;
  const checks = report.targets.map((t) => `- ${t.met ? 'met' : '**missed**'}: ${t.what} (measured ${t.measured})`);
  return [
    `# Loopback benchmark`,
    '',
    `${report.sizeMiB} MiB files of random bytes (one per scenario) over 127.0.0.1; medians over ${report.runs} runs per scenario.`,
    `MiB/s is the file size over the download's own time (lookup to verified, synced file); the ratio is to the`,
    `baseline (one plain TCP connection, file to file, synced every 16 MiB as it goes and at the end, as a download is); "by wall time" uses the time around`,
    `the whole \`p2p get\` process instead (its start included). curl from nginx: curl's whole run plus \`sync -d\` of`,
    `the file; its CPU is curl's and sync's, its senders' CPU nginx's. CPU and RSS are the receiving process's:`,
    `the downloading p2p-peerd, or the baseline receiver; the last column adds up the sending processes (the`,
    `seeders, or the baseline sender). RSS in MB (10^6 bytes). Chunk links run in TLS 1.3 (the default), or, in`,
    `the "plain chunk links" rows, without it (downloader and seeders with \`--plain-chunk-links\`; README.md, section 6).`,
    '',
    '| scenario | runs | median MiB/s | ratio to baseline | by wall time | median s | CPU s/GiB | peak RSS MB | senders\' CPU s/GiB |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    'Targets (issue 8):',
    ...checks,
    '',
    `Other processes (kernel threads such as writeback included) used ${fmt(bg.otherCpuSeconds, 1)} CPU s during the ${fmt(bg.timedSeconds, 1)} s ` +
      `of timed transfers, ${fmt(100 * bg.share, 0)}% of the machine${bg.share > 0.15 ? ': a busy, shared machine, expect noise' : ''}.`,
    `Machine: Node ${m.node}, ${m.cpus} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB RAM, ${m.platform}; load average ${m.loadAverage.join(' ')} at the start; ${m.date}.`,
    `Code: ${report.code}.`,
    `The whole run took ${fmt(report.totalSeconds, 0)} s. Raw figures per run: loopback.json. How to read: README.md.`,
    '',
  ].join('\n');
}

interface Report {
  benchmark: 'loopback';
  sizeMiB: number;
  runs: number;
  machine: ReturnType<typeof machineInfo>;
  /** `git describe --always --dirty` of the checkout whose dist/ was measured. */
  code: string;
  totalSeconds: number;
  scenarios: ScenarioResult[];
  targets: Array<{ what: string; measured: string; met: boolean }>;
  /** Other work on the machine during the timed transfers, as a share of all its CPUs over that time. */
  background: { otherCpuSeconds: number; timedSeconds: number; share: number };
}

async function main(): Promise<void> {
  const opts = parseOptions();
  assertBuilt();
  const t0 = performance.now();
  // Taken at the start: the load average before our own processes add to it.
  const machine = machineInfo();
  const ws = await Workspace.create('p2p-bench', opts.keep);
  try {
    // One file per p2p scenario (a file's id is the hash of its content, so each needs its own bytes): the
    // N-peer scenario's file is held by seeders 1..N, so every scenario has exactly its own holders.
    const sourceDir = await ws.mkdir('source');
    const outDir = await ws.mkdir('out');
    const files = new Map<number, { name: string; source: string }>();
    for (const holders of opts.peers) {
      const name = `loopback-${opts.sizeMiB}MiB-${holders}peer.bin`;
      const source = path.join(sourceDir, name);
      log(`generating ${opts.sizeMiB} MiB of random data: ${name}`);
      await generateFile(source, opts.sizeMiB);
      files.set(holders, { name, source });
    }
    const baselineSource = files.get(opts.peers[0]!)!.source;
    const nginx = curlNginxAvailable() ? await startNginx(ws, sourceDir) : undefined;
    if (!nginx) log('curl or nginx is not installed (Debian: curl, nginx-light): the curl-from-nginx comparison is skipped');

    const { proc: trackerProc, address: tracker } = await startTracker(ws);
    const seeders: Peer[] = [];
    const maxHolders = Math.max(...opts.peers);
    // Every hard link first: a new link changes the file's ctime, and a seeder that hashed the file before
    // it would see a changed file and hash it again (bench/README.md).
    for (let i = 1; i <= maxHolders; i++) {
      const share = await ws.mkdir(`seeder${i}`, 'share');
      for (const holders of opts.peers.filter((h) => h >= i)) await linkInto(share, files.get(holders)!.source);
    }
    for (let i = 1; i <= maxHolders; i++) {
      const held = opts.peers.filter((holders) => holders >= i).map((holders) => files.get(holders)!.source);
      // With plain links measured, the seeders take both kinds (a TLS downloader is served as without the flag).
      const args = opts.links.includes('plain') ? ['--plain-chunk-links'] : [];
      seeders.push(await startPeer(ws, `seeder${i}`, tracker, { files: held, nodeArgs: opts.seederNodeArgs, args }));
    }
    log(`starting ${seeders.length} seeder(s); each hashes its files before it shares them`);
    await Promise.all(seeders.map((s, i) => waitReady(ws, s, opts.peers.filter((holders) => holders >= i + 1).length)));
    // A downloader per scenario, started fresh, so its VmHWM is that scenario's peak.
    const scenarioKeys = opts.peers.flatMap((holders) => opts.links.map((link) => ({ holders, link, key: scenarioKey(holders, link) })));
    const downloaders = new Map<string, { peer: Peer; id: string }>();
    for (const { holders, link, key } of scenarioKeys) {
      const peer = await startPeer(ws, `downloader-${key}`, tracker, { nodeArgs: opts.downloaderNodeArgs, args: link === 'plain' ? ['--plain-chunk-links'] : [] });
      await waitReady(ws, peer, 0);
      downloaders.set(key, { peer, id: await waitHolders(peer, files.get(holders)!.name, holders) });
    }

    const quiet = async (): Promise<void> => {
      if (opts.waitQuietSeconds <= 0) return;
      const busy = await waitQuiet(opts.waitQuietSeconds * 1000);
      log(`other work uses ${fmt(100 * busy, 0)}% of the CPUs${busy >= 0.1 ? ` after waiting ${opts.waitQuietSeconds} s; going on anyway` : ''}`);
    };
    await quiet();
    // The warm-up transfers are not counted: in a fresh VM the first gigabyte written to the page cache
    // touches guest memory the host has not backed yet, which made the first timed transfer up to twice
    // as slow as the next ones.
    for (let i = 1; i <= opts.warmup; i++) {
      const out = path.join(outDir, 'warmup.bin');
      const b = await runBaseline(ws, baselineSource, out, 0);
      await fsp.rm(out, { force: true });
      log(`warm-up ${i}: ${fmt(b.bytes / MIB / b.seconds, 0)} MiB/s (not counted)`);
    }

    // Rounds: each run of every scenario in turn, so that noise from other work on the machine falls on
    // all scenarios alike rather than on whichever ran while it lasted.
    const baselineRuns: RunRecord[] = [];
    const curlRuns: RunRecord[] = [];
    const p2pRuns = new Map<string, RunRecord[]>(scenarioKeys.map(({ key }) => [key, []]));
    for (let run = 1; run <= opts.runs; run++) {
      if (run > 1) await quiet();
      const out = path.join(outDir, 'baseline.bin');
      const b = await runBaseline(ws, baselineSource, out, run);
      if (b.bytes !== opts.sizeMiB * MIB) throw new Error(`the baseline moved ${b.bytes} bytes, not ${opts.sizeMiB * MIB}`);
      await fsp.rm(out, { force: true });
      const br = baselineRecord(b, run);
      baselineRuns.push(br);
      log(
        `run ${run} baseline: ${fmt(br.mibPerSec, 0)} MiB/s (${fmt(b.seconds, 2)} s, of which syncing after the last byte ${fmt(b.seconds - b.receiveSeconds, 2)} s), ` +
          `CPU ${fmt(br.cpuSecondsPerGiB, 2)} s/GiB (kernel ${fmt(br.cpuSystemSecondsPerGiB, 2)}), sender ${fmt(br.senderCpuSecondsPerGiB, 2)} s/GiB, RSS ${fmt(br.peakRssBytes / 1e6, 0)} MB, others ${fmt(br.otherCpuSeconds, 1)} CPU s`,
      );
      if (nginx) {
        const curlOut = path.join(outDir, 'curl.bin');
        const c = await runCurlNginx(ws, nginx, path.basename(baselineSource), curlOut, run);
        if (c.bytes !== opts.sizeMiB * MIB) throw new Error(`curl fetched ${c.bytes} bytes, not ${opts.sizeMiB * MIB}`);
        await fsp.rm(curlOut, { force: true });
        const cr = curlRecord(c, run);
        curlRuns.push(cr);
        log(`run ${run} curl from nginx: ${fmt(cr.mibPerSec, 0)} MiB/s (${fmt(c.seconds, 2)} s with the sync), CPU ${fmt(cr.cpuSecondsPerGiB, 2)} s/GiB, nginx ${fmt(cr.senderCpuSecondsPerGiB, 2)} s/GiB`);
      }
      for (const { holders, link, key } of scenarioKeys) {
        const { peer, id } = downloaders.get(key)!;
        const r = await download(peer, seeders.slice(0, holders), trackerProc, id, path.join(outDir, files.get(holders)!.name), run);
        if (r.bytes !== opts.sizeMiB * MIB) throw new Error(`the download reported ${r.bytes} bytes, not ${opts.sizeMiB * MIB}`);
        p2pRuns.get(key)!.push(r);
        const parts = r.perPeerBytes!.map((p) => `${fmt(p.bytes / MIB, 0)}`).join('/');
        log(
          `run ${run} from ${holders} peer(s), ${link} links: ${fmt(r.mibPerSec, 0)} MiB/s (${fmt(r.seconds, 2)} s), CPU ${fmt(r.cpuSecondsPerGiB, 2)} s/GiB ` +
            `(kernel ${fmt(r.cpuSystemSecondsPerGiB, 2)}), senders ${fmt(r.senderCpuSecondsPerGiB, 2)} s/GiB, RSS ${fmt(r.peakRssBytes / 1e6, 0)} MB, MiB per peer ${parts}, others ${fmt(r.otherCpuSeconds, 1)} CPU s`,
        );
      }
    }

    const baselineMedian = median(baselineRuns.map((r) => r.mibPerSec));
    const scenarios: ScenarioResult[] = [summarize('baseline', 'baseline: plain TCP, 1 connection', 1, baselineRuns, baselineMedian)];
    if (curlRuns.length > 0) scenarios.push(summarize('curl-nginx', 'curl from nginx, then sync -d', 1, curlRuns, baselineMedian));
    for (const { holders, link, key } of scenarioKeys) {
      const hwm = memoryBytes(downloaders.get(key)!.peer.proc.pid, 'VmHWM');
      const title = `p2p get from ${holders} peer${holders > 1 ? 's' : ''}${link === 'plain' ? ', plain chunk links' : ''}`;
      scenarios.push(summarize(key, title, holders, p2pRuns.get(key)!, baselineMedian, hwm));
    }

    const p2pScenarios = scenarios.filter((s) => s.key.startsWith('peers-'));
    const worstRss = Math.max(...p2pScenarios.map((s) => s.peakRssBytes));
    const seederRss = Math.max(...seeders.map((s) => memoryBytes(s.proc.pid, 'VmHWM')));
    const curl = scenarios.find((s) => s.key === 'curl-nginx');
    const targets: Report['targets'] = [];
    for (const s of p2pScenarios) {
      targets.push({
        what: `${s.title}: >= ${TARGET_RATIO} of the baseline, wall time of \`p2p get\` included`,
        measured: `${fmt(s.wallRatioToBaseline, 2)} (by the daemon's own time ${fmt(s.ratioToBaseline, 2)})${curl ? `; against curl from nginx ${fmt(s.wallRatioToBaseline / curl.wallRatioToBaseline, 2)}` : ''}`,
        met: s.wallRatioToBaseline >= TARGET_RATIO,
      });
    }
    targets.push({
      what: `every seeder's peak RSS < ${TARGET_SEEDER_RSS_BYTES / 1e6} MB`,
      measured: `${fmt(seederRss / 1e6, 0)} MB (the largest VmHWM of ${seeders.length} seeders)`,
      met: seederRss < TARGET_SEEDER_RSS_BYTES,
    });
    targets.push({
      what: `downloading daemon's peak RSS < ${TARGET_PEAK_RSS_BYTES / 1e6} MB${opts.sizeMiB === FULL_SIZE_MIB ? ' for a 1 GiB file' : ` (for a ${opts.sizeMiB} MiB file; the target is for 1 GiB)`}`,
      measured: `${fmt(worstRss / 1e6, 0)} MB`,
      met: worstRss < TARGET_PEAK_RSS_BYTES,
    });
    const allRuns = scenarios.flatMap((s) => s.runs);
    const otherCpuSeconds = allRuns.reduce((sum, r) => sum + r.otherCpuSeconds, 0);
    const timedSeconds = allRuns.reduce((sum, r) => sum + r.windowSeconds, 0);
    const report: Report = {
      benchmark: 'loopback',
      sizeMiB: opts.sizeMiB,
      runs: opts.runs,
      machine,
      code: codeVersion(),
      totalSeconds: (performance.now() - t0) / 1000,
      scenarios,
      targets,
      background: { otherCpuSeconds, timedSeconds, share: otherCpuSeconds / (timedSeconds * machine.cpus) },
    };
    const md = markdown(report);
    process.stdout.write(md);
    if (opts.results) {
      fs.mkdirSync(opts.results, { recursive: true });
      fs.writeFileSync(path.join(opts.results, 'loopback.json'), `${JSON.stringify(report, null, 2)}\n`);
      fs.writeFileSync(path.join(opts.results, 'loopback.md'), md);
      log(`wrote ${path.relative(process.cwd(), path.join(opts.results, 'loopback.md'))} and loopback.json`);
    }
  } finally {
    await ws.cleanup();
  }
}

main().catch((err: Error) => {
  process.stderr.write(`loopback: ${err.message}\n`);
  process.exit(1);
});
