/**
 * Scenario 1, peers: one downloader (1 Gbit/s link) and N = 1..20 seeders at 100 Mbit/s each. For each N
 * and strategy, a fresh downloading daemon fetches the file with `p2p get`; time and efficiency against
 * size / min(N x 100 Mbit/s, 1 Gbit/s), and the downloading daemon's CPU seconds and peak memory per GiB.
 * Beside the engine, a comparator row (issue 8): aria2c fetching the same file from an nginx in each of
 * the same N seeder hosts, through the same capped links (see comparator.ts). It loops over N as well as
 * runs and rows, and its report is rendered again from the JSON (--render), so it takes the scaffold's
 * pieces (forEachRun, freshDownload) rather than labScenario itself.
 */
import os from 'node:os';
import { GIB, MIB, type Started } from '../../harness.js';
import { aria2cArgs, availableComparators, fetchWithAria2c, fileUri, NGINX_PORT, startNginx, type Comparator, type ComparatorPrograms } from '../comparator.js';
import { analyzeSamples, MBIT, withLab, type Lab } from '../lab.js';
import { mb, mdTable, pct, secs, type ScenarioReport } from '../report.js';
import { failure, forEachRun, freshDownload, idealSeconds, LINK_BPS, maxOf, med, minOf, type Scenario, type Strategy, type TestFile } from '../scenario.js';
import { COLORS, renderChart, type LineSeries } from '../svg.js';

const SEEDER_BPS = 100 * MBIT;

/** A row of the scenario: the engine with one of its strategies, or a comparator. */
export type PeersRow = Strategy | Comparator;

export interface PeersRun {
  n: number;
  strategy: PeersRow;
  run: number;
  ok: boolean;
  error?: string;
  idealSeconds: number;
  /** The engine: the daemon's own `seconds`. aria2c: its wall time plus the sync of the file (= wallSeconds). */
  seconds?: number;
  /** The engine: the whole `p2p get`, CLI start-up included. aria2c: as `seconds`. */
  wallSeconds: number;
  efficiency?: number;
  /** Against the wall time of the whole `p2p get` (CLI start-up included). */
  wallEfficiency?: number;
  peersUsed?: number;
  firstBytesSeconds?: number;
  /** The daemon's own time from receiving the request to the first chunk verified and written (`firstByteSeconds`). */
  daemonFirstByteSeconds?: number;
  steadyEfficiency?: number;
  /** The downloading process's CPU: the daemon (from /proc), or aria2c and its sync (its cgroup). */
  cpuSeconds: number;
  cpuSecondsPerGiB: number;
  /** The part of it spent in the kernel. */
  cpuSystemShare: number;
  /** aria2c: its VmHWM sampled every 50 ms. */
  peakRssBytes: number;
  rssGrowthBytes?: number;
  /**
   * CPU of every process of that row, from their cgroups: the engine's tracker, all its peer daemons and
   * the CLI; or aria2c (with the sync) and every nginx. Not the lab runner.
   */
  allCpuSeconds?: number;
  allCpuSecondsPerGiB?: number;
  /** aria2c only: its process alone, the sync after it, nginx's part of allCpuSeconds, bytes per seeder uplink. */
  aria2cSeconds?: number;
  syncSeconds?: number;
  nginxCpuSeconds?: number;
  sentMiBPerSeeder?: number[];
  machineBusyFraction: number;
  /** Of that, work that was not the lab's (other sessions, tests...). */
  otherBusyFraction?: number;
  /** CPU seconds of every lab process over the download, and the rate two cores could sustain at that cost. */
  labCpuSeconds?: number;
  cpuCeilingMbit?: number;
  /**
   * Against the larger of the ideal and what two cores allow at the CPU this run cost (the lab's CPU
   * seconds / cores): how close the engine came to what this machine can do at all.
   */
  cpuBoundEfficiency?: number;
  /** Machine busy fraction just before the run, the lab idle (after up to --quiet-wait seconds of waiting). */
  otherBusyBefore?: number;
  /** The engine's CPU seconds over the download by role; `cli` is the product's group less the daemons. */
  cpuByRole?: { downloader: number; sharingSeeders: number; idleSeeders: number; tracker: number; cli: number };
}

const seederHost = (i: number): string => `s${i + 1}`;

/** Splits the processes' CPU by role (process names are `s3.7`, `dl.24`, `tracker`). */
function cpuByRole(byProcess: Record<string, number>, n: number, product: number | undefined): NonNullable<PeersRun['cpuByRole']> {
  const roles = { downloader: 0, sharingSeeders: 0, idleSeeders: 0, tracker: 0, cli: 0 };
  let daemons = 0;
  for (const [name, seconds] of Object.entries(byProcess)) {
    const seeder = /^s(\d+)\./.exec(name);
    if (seeder) roles[Number(seeder[1]) <= n ? 'sharingSeeders' : 'idleSeeders'] += seconds;
    else if (name.startsWith('dl.')) roles.downloader += seconds;
    else if (name === 'tracker') roles.tracker += seconds;
    else continue;
    daemons += seconds;
  }
  roles.cli = product !== undefined ? Math.max(0, product - daemons) : NaN;
  return roles;
}

async function engineRun(lab: Lab, file: TestFile, n: number, strategy: Strategy, r: number): Promise<PeersRun> {
  const ideal = idealSeconds(file.sizeBytes, Array(n).fill(SEEDER_BPS));
  const { out, ok } = await freshDownload(lab, file, n, strategy);
  const res = out.result;
  const { firstBytesSeconds, steadyBitsPerSec } = analyzeSamples(out.samples);
  const idealBps = Math.min(n * SEEDER_BPS, LINK_BPS);
  const run: PeersRun = {
    n,
    strategy,
    run: r,
    ok,
    idealSeconds: ideal,
    wallSeconds: out.wallSeconds,
    cpuSeconds: out.cpuSeconds,
    cpuSecondsPerGiB: out.cpuSeconds / (file.sizeBytes / GIB),
    cpuSystemShare: out.cpuSystemSeconds / out.cpuSeconds,
    peakRssBytes: out.peakRssBytes,
    rssGrowthBytes: out.peakRssBytes - out.rssBeforeBytes,
    machineBusyFraction: out.machineBusyFraction,
  };
  if (out.productCpu) {
    run.allCpuSeconds = out.productCpu.seconds;
    run.allCpuSecondsPerGiB = out.productCpu.seconds / (file.sizeBytes / GIB);
  }
  if (out.otherBusyFraction !== undefined) run.otherBusyFraction = out.otherBusyFraction;
  if (Number.isFinite(out.otherBusyBefore)) run.otherBusyBefore = out.otherBusyBefore;
  run.cpuByRole = cpuByRole(out.processCpuSeconds, n, out.productCpu?.seconds);
  if (out.labCpuSeconds !== undefined) {
    run.labCpuSeconds = out.labCpuSeconds;
    run.cpuCeilingMbit = (os.cpus().length * file.sizeBytes * 8) / out.labCpuSeconds / MBIT;
    if (ok && res) run.cpuBoundEfficiency = Math.max(ideal, out.labCpuSeconds / os.cpus().length) / res.seconds;
  }
  if (ok && res) {
    run.seconds = res.seconds;
    run.efficiency = ideal / res.seconds;
    run.wallEfficiency = ideal / out.wallSeconds;
    run.peersUsed = res.peers.filter((p) => p.bytes > 0).length;
    if (firstBytesSeconds !== undefined) run.firstBytesSeconds = firstBytesSeconds;
    if (typeof res.firstByteSeconds === 'number') run.daemonFirstByteSeconds = res.firstByteSeconds;
    if (steadyBitsPerSec !== undefined) run.steadyEfficiency = steadyBitsPerSec / idealBps;
  } else {
    run.error = failure(out);
  }
  return run;
}

async function aria2cRun(lab: Lab, programs: ComparatorPrograms, file: TestFile, n: number, r: number): Promise<PeersRun> {
  const ideal = idealSeconds(file.sizeBytes, Array(n).fill(SEEDER_BPS));
  const out = await fetchWithAria2c(lab, programs, 'dl', Array.from({ length: n }, (_, i) => seederHost(i)), file);
  const gib = file.sizeBytes / GIB;
  const aria2c = out.cost.groups.aria2c;
  const nginx = out.cost.groups.nginx;
  const run: PeersRun = {
    n,
    strategy: 'aria2c',
    run: r,
    ok: out.ok,
    idealSeconds: ideal,
    wallSeconds: out.seconds,
    aria2cSeconds: out.aria2cSeconds,
    syncSeconds: out.syncSeconds,
    cpuSeconds: aria2c?.seconds ?? NaN,
    cpuSecondsPerGiB: (aria2c?.seconds ?? NaN) / gib,
    cpuSystemShare: aria2c ? aria2c.systemSeconds / (aria2c.userSeconds + aria2c.systemSeconds) : NaN,
    peakRssBytes: out.peakRssBytes,
    machineBusyFraction: out.cost.machineBusyFraction,
    sentMiBPerSeeder: out.sentBytes.map((b) => Math.round((b / MIB) * 10) / 10),
  };
  if (aria2c && nginx) {
    run.nginxCpuSeconds = nginx.seconds;
    run.allCpuSeconds = aria2c.seconds + nginx.seconds;
    run.allCpuSecondsPerGiB = run.allCpuSeconds / gib;
  }
  if (out.cost.otherBusyFraction !== undefined) run.otherBusyFraction = out.cost.otherBusyFraction;
  if (Number.isFinite(out.otherBusyBefore)) run.otherBusyBefore = out.otherBusyBefore;
  if (out.cost.labCpuSeconds !== undefined) {
    run.labCpuSeconds = out.cost.labCpuSeconds;
    run.cpuCeilingMbit = (os.cpus().length * file.sizeBytes * 8) / out.cost.labCpuSeconds / MBIT;
    if (out.ok) run.cpuBoundEfficiency = Math.max(ideal, out.cost.labCpuSeconds / os.cpus().length) / out.seconds;
  }
  if (out.ok) {
    run.seconds = out.seconds;
    run.efficiency = ideal / out.seconds;
    run.wallEfficiency = run.efficiency;
    // A seeder counts as used when its uplink carried at least one piece.
    run.peersUsed = out.sentBytes.filter((b) => b >= MIB).length;
  } else {
    run.error = out.error ?? 'failed';
  }
  return run;
}

export const peersScenario: Scenario = async (ctx) => {
  const { opts, ws } = ctx;
  const started = performance.now();
  const file = await ctx.testFile(opts.sizeMiB);
  const counts = [...new Set(opts.peerCounts)].sort((a, b) => a - b);
  const maxN = counts[counts.length - 1]!;
  const { comparators, programs } = availableComparators('peers', opts.comparators, opts.log);
  const rows: PeersRow[] = [...opts.strategies, ...comparators];
  const runs: PeersRun[] = [];
  await withLab(ws, async (lab) => {
    lab.addHost('dl', { upBps: LINK_BPS, downBps: LINK_BPS });
    for (let i = 1; i <= maxN; i++) lab.addHost(`s${i}`, { upBps: SEEDER_BPS });
    opts.log(`peers: starting ${maxN} seeders`);
    const seeders = await lab.startPeers(maxN, seederHost, seederHost);
    const nginx: Started[] = [];
    let sharing = 0;
    for (const n of counts) {
      for (let i = sharing; i < n; i++) await lab.share(seeders[i]!, file.path);
      for (let i = n; i < sharing; i++) await lab.unshare(seeders[i]!, file.name);
      sharing = n;
      // The comparator's servers: one nginx in each host that holds the file, as for the engine.
      if (programs) {
        while (nginx.length < n) nginx.push(await startNginx(lab, programs, seederHost(nginx.length), file));
        while (nginx.length > n) await lab.stop(nginx.pop()!);
        if (n === counts[0]) opts.log(`peers: comparator at N=${n}: ip netns exec ${lab.net.host('dl').ns} ${programs.aria2c} ${aria2cArgs({ uris: Array.from({ length: n }, (_, i) => fileUri(lab.net.host(seederHost(i)).ip, file.name)), dir: ws.path('aria2c', 'dl'), outName: file.name }).join(' ')}; then sync -d FILE (nginx on port ${NGINX_PORT} in each seeder's host)`);
      }
      await forEachRun(opts.runs, rows, async (row, r) => {
        const run = row === 'aria2c' ? await aria2cRun(lab, programs!, file, n, r) : await engineRun(lab, file, n, row, r);
        runs.push(run);
        opts.log(`peers: N=${n} ${row} run ${r}: ${run.ok ? `${run.seconds!.toFixed(2)} s, efficiency ${run.efficiency!.toFixed(2)}, ${run.peersUsed} peers used, all processes ${secs(run.allCpuSecondsPerGiB)} CPU s/GiB${run.cpuByRole ? ` (${Object.entries(run.cpuByRole).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(', ')})` : ''}` : `FAILED ${run.error}`}`);
      });
    }
  });

  return peersReport({ runs, counts, strategies: opts.strategies, comparators, sizeMiB: opts.sizeMiB, runsPerPoint: opts.runs, elapsedSeconds: (performance.now() - started) / 1000 });
};

export interface PeersReportInput {
  runs: PeersRun[];
  counts: number[];
  strategies: Strategy[];
  /** Comparator rows measured in the same run (none in results from before issue 8). */
  comparators: Comparator[];
  sizeMiB: number;
  runsPerPoint: number;
  elapsedSeconds: number;
}

interface Cell {
  runs: number;
  failed: number;
  medianSeconds: number;
  medianWallSeconds: number;
  medianEfficiency: number;
  minEfficiency: number;
  medianWallEfficiency: number;
  medianPeersUsed: number;
  medianFirstBytesSeconds: number;
  medianDaemonFirstByteMs: number;
  medianSteadyEfficiency: number;
  medianCpuSecondsPerGiB: number;
  medianCpuSystemShare: number;
  medianAllCpuSeconds: number;
  medianAllCpuSecondsPerGiB: number;
  medianPeakRssBytes: number;
  medianRssGrowthBytes: number;
  medianMachineBusy: number;
  medianOtherBusy: number;
  medianLabCpuSeconds: number;
  medianCpuCeilingMbit: number;
  medianCpuBoundEfficiency: number;
  /** aria2c only. */
  medianAria2cSeconds?: number;
  medianSyncSeconds?: number;
  medianNginxCpuSecondsPerGiB?: number;
}

/** The tables, targets, notes and chart from the runs: also used to render lab-peers.json again (--render). */
export function peersReport(input: PeersReportInput): ScenarioReport {
  const { runs, counts } = input;
  const opts = { strategies: input.strategies, sizeMiB: input.sizeMiB, runs: input.runsPerPoint };
  const rows: PeersRow[] = [...input.strategies, ...input.comparators];
  const file = { sizeBytes: input.sizeMiB * MIB };
  const gib = file.sizeBytes / GIB;
  const maxN = counts[counts.length - 1]!;
  const at = (n: number, s: PeersRow): PeersRun[] => runs.filter((r) => r.n === n && r.strategy === s);
  const summary = counts.map((n) => {
    const row: Record<string, unknown> = { n, idealSeconds: idealSeconds(file.sizeBytes, Array(n).fill(SEEDER_BPS)) };
    for (const s of rows) {
      const rs = at(n, s);
      const c: Cell = {
        runs: rs.length,
        failed: rs.filter((r) => !r.ok).length,
        medianSeconds: med(rs.map((r) => r.seconds)),
        medianWallSeconds: med(rs.map((r) => (r.ok ? r.wallSeconds : undefined))),
        medianEfficiency: med(rs.map((r) => r.efficiency)),
        minEfficiency: minOf(rs.map((r) => r.efficiency)),
        medianWallEfficiency: med(rs.map((r) => r.wallEfficiency)),
        medianPeersUsed: med(rs.map((r) => r.peersUsed)),
        medianFirstBytesSeconds: med(rs.map((r) => r.firstBytesSeconds)),
        medianDaemonFirstByteMs: med(rs.map((r) => (r.daemonFirstByteSeconds === undefined ? undefined : r.daemonFirstByteSeconds * 1000))),
        medianSteadyEfficiency: med(rs.map((r) => r.steadyEfficiency)),
        medianCpuSecondsPerGiB: med(rs.map((r) => r.cpuSecondsPerGiB)),
        medianCpuSystemShare: med(rs.map((r) => r.cpuSystemShare)),
        medianAllCpuSeconds: med(rs.map((r) => r.allCpuSeconds)),
        medianAllCpuSecondsPerGiB: med(rs.map((r) => r.allCpuSecondsPerGiB)),
        medianPeakRssBytes: med(rs.map((r) => r.peakRssBytes)),
        medianRssGrowthBytes: med(rs.map((r) => r.rssGrowthBytes)),
        medianMachineBusy: med(rs.map((r) => r.machineBusyFraction)),
        medianOtherBusy: med(rs.map((r) => r.otherBusyFraction)),
        medianLabCpuSeconds: med(rs.map((r) => r.labCpuSeconds)),
        medianCpuCeilingMbit: med(rs.map((r) => r.cpuCeilingMbit)),
        medianCpuBoundEfficiency: med(rs.map((r) => r.cpuBoundEfficiency)),
      };
      if (s === 'aria2c') {
        c.medianAria2cSeconds = med(rs.map((r) => r.aria2cSeconds));
        c.medianSyncSeconds = med(rs.map((r) => r.syncSeconds));
        c.medianNginxCpuSecondsPerGiB = med(rs.map((r) => (r.nginxCpuSeconds === undefined ? undefined : r.nginxCpuSeconds / gib)));
      }
      row[s] = c;
    }
    return row;
  });
  const cell = (row: Record<string, unknown>, s: PeersRow): Cell => row[s] as Cell;
  const has = (s: Strategy): boolean => opts.strategies.includes(s);
  const hasAria2c = input.comparators.includes('aria2c');
  const percent = (v: number): string => (Number.isFinite(v) ? `${Math.round(v * 100)}%` : 'n/a');
  const failedNote = (c: Cell): string => (c.failed ? ` (${c.failed} failed)` : '');

  // One group of columns per row; the comparator's time is its wall time, so its header says so.
  const mainTable = mdTable(
    ['N', 'ideal s', ...rows.flatMap((s) => [s === 'aria2c' ? 'aria2c s (wall incl. sync)' : `${s} s`, `${s} eff.`, `${s} min eff.`, `${s} peers used`, `${s} CPU s/GiB, all processes`])],
    summary.map((row) => [
      row.n as number,
      secs(row.idealSeconds as number),
      ...rows.flatMap((s) => {
        const c = cell(row, s);
        return [secs(c.medianSeconds) + failedNote(c), pct(c.medianEfficiency), pct(c.minEfficiency), Number.isFinite(c.medianPeersUsed) ? String(c.medianPeersUsed) : 'n/a', secs(c.medianAllCpuSecondsPerGiB)];
      }),
    ]),
  );
  const timeTable = mdTable(
    [
      'N',
      ...rows.flatMap((s) =>
        s === 'aria2c' ? ['aria2c process s', 'aria2c sync s', 'aria2c eff. vs 2-core bound'] : [`${s} first bytes s`, `${s} first verified byte ms (daemon)`, `${s} steady eff. (10-90%)`, `${s} wall s (incl. CLI)`, `${s} eff. incl. CLI start`, `${s} eff. vs 2-core bound`],
      ),
    ],
    summary.map((row) => [
      row.n as number,
      ...rows.flatMap((s) => {
        const c = cell(row, s);
        return s === 'aria2c'
          ? [secs(c.medianAria2cSeconds), secs(c.medianSyncSeconds), pct(c.medianCpuBoundEfficiency)]
          : [secs(c.medianFirstBytesSeconds), Number.isFinite(c.medianDaemonFirstByteMs) ? Math.round(c.medianDaemonFirstByteMs) : 'n/a', pct(c.medianSteadyEfficiency), secs(c.medianWallSeconds), pct(c.medianWallEfficiency), pct(c.medianCpuBoundEfficiency)];
      }),
    ]),
  );
  const costTable = mdTable(
    [
      'N',
      ...rows.flatMap((s) =>
        s === 'aria2c'
          ? ['aria2c process CPU s/GiB', 'aria2c in kernel', 'nginx CPU s/GiB', 'aria2c peak RSS MB (sampled)', 'aria2c machine busy', 'aria2c of it not the lab', 'aria2c lab CPU s (all lab processes)', 'aria2c CPU ceiling Mbit/s']
          : [`${s} CPU s/GiB`, `${s} in kernel`, `${s} peak RSS MB`, `${s} RSS growth MB`, `${s} machine busy`, `${s} of it not the lab`, `${s} lab CPU s (all processes)`, `${s} CPU ceiling Mbit/s`],
      ),
    ],
    summary.map((row) => [
      row.n as number,
      ...rows.flatMap((s) => {
        const c = cell(row, s);
        const shared = [percent(c.medianMachineBusy), percent(c.medianOtherBusy), secs(c.medianLabCpuSeconds), Number.isFinite(c.medianCpuCeilingMbit) ? c.medianCpuCeilingMbit.toFixed(0) : 'n/a'];
        return s === 'aria2c'
          ? [secs(c.medianCpuSecondsPerGiB), percent(c.medianCpuSystemShare), secs(c.medianNginxCpuSecondsPerGiB), mb(c.medianPeakRssBytes), ...shared]
          : [secs(c.medianCpuSecondsPerGiB), percent(c.medianCpuSystemShare), mb(c.medianPeakRssBytes), mb(c.medianRssGrowthBytes), ...shared];
      }),
    ]),
  );

  // Targets: adaptive >= 0.9 of the ideal for every N (medians); CPU and peak memory per GiB flat.
  const primary: Strategy = has('adaptive') ? 'adaptive' : opts.strategies[0]!;
  const effs = summary.map((row) => ({ n: row.n as number, e: cell(row, primary).medianEfficiency }));
  const below = effs.filter((x) => !(x.e >= 0.9));
  // "Flat as N grows": the largest third of the N values against the smallest third (medians of the
  // per-N medians), so that one noisy point does not decide; the full range is shown beside it.
  const third = Math.max(1, Math.floor(counts.length / 3));
  const trend = (pick: (c: Cell) => number, s: PeersRow = primary): { low: number; high: number; ratio: number; min: number; max: number } => {
    const values = summary.map((row) => pick(cell(row, s)));
    const low = med(values.slice(0, third));
    const high = med(values.slice(-third));
    return { low, high, ratio: high / low, min: minOf(values), max: maxOf(values) };
  };
  const nRange = (from: number, to: number): string => (from === to ? `N=${counts[from]}` : `N=${counts[from]}-${counts[to]}`);
  const lowN = nRange(0, third - 1);
  const highN3 = nRange(counts.length - third, counts.length - 1);
  const cpu = trend((c) => c.medianCpuSecondsPerGiB);
  const rss = trend((c) => c.medianPeakRssBytes);
  const targets = [
    {
      target: `${primary}: median efficiency >= 0.9 of the ideal for every N`,
      measured: below.length === 0 ? `all N: min median ${pct(minOf(effs.map((x) => x.e)))}` : `below at N = ${below.map((x) => `${x.n} (${pct(x.e)})`).join(', ')}`,
      holds: below.length === 0,
    },
    {
      target: `${primary}: downloading daemon's CPU s per GiB flat as N grows (${highN3} against ${lowN}: ratio <= 1.25)`,
      measured: `${secs(cpu.low)} -> ${secs(cpu.high)} s/GiB (ratio ${cpu.ratio.toFixed(2)}); single N values range ${secs(cpu.min)}-${secs(cpu.max)}`,
      holds: cpu.ratio <= 1.25,
    },
    {
      target: `${primary}: downloading daemon's peak RSS flat as N grows (${highN3} against ${lowN}: ratio <= 1.25)`,
      measured: `${mb(rss.low)} -> ${mb(rss.high)} MB (ratio ${rss.ratio.toFixed(2)}; ${((rss.high / (file.sizeBytes / GIB)) / 1e6).toFixed(0)} MB per GiB of this ${opts.sizeMiB} MiB file, but the peak does not grow with the file size: the daemon keeps a few chunks per peer in memory, not the file); single N values range ${mb(rss.min)}-${mb(rss.max)} MB`,
      holds: rss.ratio <= 1.25,
    },
    ...comparatorTargets(),
  ];

  /** Issue 8's two targets against aria2c + nginx, from the per-N medians of the same lab run. */
  function comparatorTargets(): Array<{ target: string; measured: string; holds: boolean }> {
    const cpuTarget = `${primary}: all processes' CPU per GiB <= 2 x aria2c + nginx's in the same run, for every N`;
    const effTarget = `${primary}: efficiency >= 0.9 and >= aria2c's for every N (medians; ${primary} by the daemon's own seconds, aria2c by its wall time)`;
    if (!hasAria2c) {
      const measured = 'not measured: no aria2c rows in this run (aria2c or nginx missing, or not asked for)';
      return [
        { target: cpuTarget, measured, holds: false },
        { target: effTarget, measured, holds: false },
      ];
    }
    const perN = summary.map((row) => {
      const p = cell(row, primary);
      const a = cell(row, 'aria2c');
      return { n: row.n as number, p, a, cpuRatio: p.medianAllCpuSecondsPerGiB / a.medianAllCpuSecondsPerGiB };
    });
    const cpuFails = perN.filter((x) => !(x.cpuRatio <= 2));
    const ratios = perN.map((x) => x.cpuRatio);
    const ratioTrend = trend((c) => c.medianAllCpuSecondsPerGiB);
    const aTrend = trend((c) => c.medianAllCpuSecondsPerGiB, 'aria2c');
    const effFails = perN.filter((x) => !(x.p.medianEfficiency >= 0.9 && x.p.medianEfficiency >= x.a.medianEfficiency));
    const wallFails = perN.filter((x) => !(x.p.medianWallEfficiency >= 0.9 && x.p.medianWallEfficiency >= x.a.medianEfficiency));
    const listN = (xs: typeof perN): string => xs.map((x) => x.n).join(', ');
    return [
      {
        target: cpuTarget,
        measured: `${primary} / (aria2c + nginx) = ${ratios.every(Number.isFinite) ? `${minOf(ratios).toFixed(2)}-${maxOf(ratios).toFixed(2)} x` : 'n/a (no cgroup accounting)'}; ${primary} ${secs(ratioTrend.low)} -> ${secs(ratioTrend.high)} s/GiB, aria2c + nginx ${secs(aTrend.low)} -> ${secs(aTrend.high)} s/GiB (${lowN} -> ${highN3})${cpuFails.length ? `; above 2 x at N = ${cpuFails.map((x) => `${x.n} (${Number.isFinite(x.cpuRatio) ? `${x.cpuRatio.toFixed(2)} x` : 'n/a'})`).join(', ')}` : ''}`,
        holds: cpuFails.length === 0,
      },
      {
        target: effTarget,
        measured: `${effFails.length === 0 ? 'every N' : `fails at N = ${effFails.map((x) => `${x.n} (${pct(x.p.medianEfficiency)} vs aria2c ${pct(x.a.medianEfficiency)})`).join(', ')}`}; with ${primary}'s wall time incl. CLI start instead: ${wallFails.length === 0 ? 'every N' : `fails at N = ${listN(wallFails)}`}`,
        holds: effFails.length === 0,
      },
    ];
  }

  const notes: string[] = [];
  const failed = runs.filter((r) => !r.ok);
  if (failed.length) notes.push(`${failed.length} run(s) failed: ${failed.map((r) => `N=${r.n} ${r.strategy} run ${r.run}: ${r.error}`).join('; ')}`);
  notes.push(
    `Efficiency = ideal / the download's own time (\`seconds\` in the \`p2p get --json\` result: lookup, connections, round-trip measurements and manifest included). A TCP stream through a tbf cap carries at most ~0.95 of the nominal rate as payload (Ethernet, IP and TCP headers count against the cap; measured 94.7 Mbit/s through 100 Mbit/s here), so ~0.95 is the ceiling, not 1.`,
  );
  if (hasAria2c) {
    const cliStart = med(runs.filter((r) => r.strategy === primary && r.seconds !== undefined).map((r) => r.wallSeconds - r.seconds!));
    notes.push(
      `The comparator, aria2c: one nginx (sendfile, single process) in each of the N seeder hosts serves the same file through the same 100 Mbit/s caps; aria2c in the downloader's host fetches it with one connection per seeder (\`--split=N --max-connection-per-server=1\`, 1 MiB pieces). Its time is its wall time, from the launch of \`ip netns exec ... aria2c\` to its exit (process start, connections and the size probe included), plus a \`sync -d\` of the file after it, since the engine's \`seconds\` end with a datasync. The engine's efficiency is by the daemon's own \`seconds\`, which start when the daemon gets the request and so leave out the CLI's start (node; ${primary}'s wall time was a median ${secs(cliStart)} s longer than its \`seconds\` in this run); its wall time, CLI included, is in "Where the time goes", and the efficiency target is given both ways. aria2c checks nothing; the engine hashes and verifies every chunk (the lab checks aria2c's file's SHA-256 afterwards, outside the timing).`,
    );
    notes.push(
      `"CPU s/GiB, all processes", from cgroups (cpu-account.ts), over the download: for the engine, its tracker, every peer daemon (the N sharing seeders, the idle ones up to ${maxN}, the downloader) and the CLI; for aria2c, aria2c and its sync, and every nginx. The lab runner (which samples the engine's progress every 100 ms) and kernel threads (writeback, ksoftirqd) are in neither; network work the kernel does in softirq context is charged to whichever process was on the CPU at that moment (this kernel has no separate IRQ time accounting), the same way for both rows. "aria2c peers used" counts seeder uplinks that sent at least 1 MiB meanwhile (tc); bytes per seeder are in the JSON (\`sentMiBPerSeeder\`).`,
    );
  }
  notes.push(
    `At N >= 10 the ideal is ${secs(idealSeconds(file.sizeBytes, [LINK_BPS]))} s for ${opts.sizeMiB} MiB, so fixed start-up costs (first verified bytes after a median ${secs(med(runs.filter((r) => r.n >= 10 && r.strategy === primary).map((r) => r.firstBytesSeconds)))} s at N >= 10) weigh heavily; the steady-state column shows the rate between 10% and 90% of the file against the ideal rate.`,
  );

  const highN = runs.filter((r) => r.n >= 10 && r.strategy === primary);
  if (highN.length && highN.some((r) => r.labCpuSeconds !== undefined)) {
    notes.push(
      `CPU: at N >= 10 the lab's processes (seeders, downloader, CLI, tracker) used a median ${secs(med(highN.map((r) => r.labCpuSeconds)))} CPU s per ${opts.sizeMiB} MiB download, the downloading daemon ${secs(med(highN.map((r) => r.cpuSeconds)))} of it (${Math.round(med(highN.map((r) => r.cpuSystemShare)) * 100)}% in the kernel). At that cost ${os.cpus().length} cores can carry at most ~${med(highN.map((r) => r.cpuCeilingMbit)).toFixed(0)} Mbit/s, against the 1000 the ideal assumes; other work on the machine took a median ${Math.round(med(highN.map((r) => r.otherBusyFraction)) * 100)}% of it meanwhile.`,
    );
  }

  notes.push(
    `"eff. vs 2-core bound" measures against the larger of the ideal and (CPU seconds all lab processes used in that run) / ${os.cpus().length} cores: no engine can finish before the machine has done that work. It ignores other load on the machine, so it is still an optimistic bound.`,
  );

  const series = (s: PeersRow, pick: (r: PeersRun) => number | undefined, color: string, name: string = s): LineSeries => ({
    name,
    color,
    points: summary.map((row) => ({ x: row.n as number, y: med(at(row.n as number, s).map(pick)) })).filter((p) => Number.isFinite(p.y)),
    dots: runs.filter((r) => r.strategy === s).map((r) => ({ x: r.n, y: pick(r) ?? NaN })).filter((p) => Number.isFinite(p.y)),
  });
  const colorOf = (s: PeersRow): string => COLORS[s];
  const comparatorSeries = (pick: (r: PeersRun) => number | undefined, name?: string): LineSeries[] => input.comparators.map((c) => series(c, pick, colorOf(c), name ?? c));
  const allCpuTarget: LineSeries[] = hasAria2c
    ? [
        {
          name: '2 x aria2c + nginx (target)',
          color: COLORS.target,
          dashed: true,
          points: summary.map((row) => ({ x: row.n as number, y: 2 * cell(row, 'aria2c').medianAllCpuSecondsPerGiB })).filter((p) => Number.isFinite(p.y)),
        },
      ]
    : [];
  const svg = renderChart(`Lab 1: ${opts.sizeMiB} MiB from N seeders at 100 Mbit/s, downloader link 1 Gbit/s`, `medians of ${opts.runs} run(s) per point (dots: single runs); efficiency = size / min(N x 100 Mbit/s, 1 Gbit/s) / time${hasAria2c ? '; aria2c: from nginx, wall time' : ''}`, [
    {
      kind: 'line',
      title: 'Efficiency against the ideal',
      xLabel: 'seeders (N)',
      yLabel: 'efficiency',
      yMin: 0,
      yMax: 1.1,
      series: [
        ...opts.strategies.map((s) => series(s, (r) => r.efficiency, colorOf(s))),
        ...comparatorSeries((r) => r.efficiency, 'aria2c from nginx'),
        { ...series(primary, (r) => r.cpuBoundEfficiency, COLORS.extra, `${primary} vs 2-core bound`), dashed: true, dots: [] },
      ],
      refLines: [{ y: 0.9, label: 'target 0.9' }],
    },
    {
      kind: 'line',
      title: 'Download time',
      xLabel: 'seeders (N)',
      yLabel: 'seconds',
      series: [
        ...opts.strategies.map((s) => series(s, (r) => r.seconds, colorOf(s))),
        ...comparatorSeries((r) => r.seconds, 'aria2c (wall)'),
        { name: 'ideal', color: COLORS.ideal, dashed: true, points: summary.map((row) => ({ x: row.n as number, y: row.idealSeconds as number })) },
      ],
    },
    ...(hasAria2c || runs.some((r) => r.allCpuSecondsPerGiB !== undefined)
      ? [
          {
            kind: 'line' as const,
            title: 'All processes: CPU seconds per GiB',
            xLabel: 'seeders (N)',
            yLabel: 'CPU s / GiB',
            series: [...opts.strategies.map((s) => series(s, (r) => r.allCpuSecondsPerGiB, colorOf(s))), ...comparatorSeries((r) => r.allCpuSecondsPerGiB, 'aria2c + nginx'), ...allCpuTarget],
          },
        ]
      : []),
    {
      kind: 'line',
      title: hasAria2c ? 'Downloading process: CPU seconds per GiB (the daemon; aria2c)' : 'Downloading daemon: CPU seconds per GiB',
      xLabel: 'seeders (N)',
      yLabel: 'CPU s / GiB',
      series: [...opts.strategies.map((s) => series(s, (r) => r.cpuSecondsPerGiB, colorOf(s))), ...comparatorSeries((r) => r.cpuSecondsPerGiB)],
    },
    {
      kind: 'line',
      title: hasAria2c ? 'Downloading process: peak RSS (VmHWM; aria2c sampled)' : 'Downloading daemon: peak RSS (VmHWM)',
      xLabel: 'seeders (N)',
      yLabel: 'MB',
      series: [...opts.strategies.map((s) => series(s, (r) => r.peakRssBytes / 1e6, colorOf(s))), ...comparatorSeries((r) => r.peakRssBytes / 1e6)],
    },
  ]);

  const tables = [
    { title: 'Time and efficiency (medians)', markdown: mainTable },
    { title: 'Where the time goes (medians)', markdown: timeTable },
    { title: `Cost on the downloading side (medians; a fresh daemon per run, so VmHWM is that run's peak${hasAria2c ? "; aria2c's from its cgroup" : ''})`, markdown: costTable },
  ];
  // Runs recorded before the lab split the CPU by process (older JSON) have no such table.
  const roleRuns = runs.filter((r) => r.strategy === primary && r.cpuByRole);
  if (roleRuns.length > 0) {
    const roles = ['downloader', 'sharingSeeders', 'idleSeeders', 'tracker', 'cli'] as const;
    tables.push({
      title: `${primary}: whose CPU it was (medians, CPU s per ${opts.sizeMiB} MiB download)`,
      markdown: mdTable(
        ['N', 'downloading daemon', 'the N sharing seeders', `the ${maxN} - N idle seeders`, 'tracker', 'p2p CLI (and its start)'],
        counts.map((n) => [n, ...roles.map((role) => secs(med(roleRuns.filter((r) => r.n === n).map((r) => r.cpuByRole![role]))))]),
      ),
    });
  }
  if (hasAria2c) {
    tables.splice(1, 0, {
      title: `${primary} against aria2c + nginx (medians, the same lab run)`,
      markdown: mdTable(
        ['N', `${primary} eff.`, `${primary} eff. incl. CLI start`, 'aria2c eff.', `${primary} CPU s/GiB, all processes`, 'aria2c + nginx CPU s/GiB, all processes', 'ratio (target <= 2)'],
        summary.map((row) => {
          const p = cell(row, primary);
          const a = cell(row, 'aria2c');
          const ratio = p.medianAllCpuSecondsPerGiB / a.medianAllCpuSecondsPerGiB;
          return [row.n as number, pct(p.medianEfficiency), pct(p.medianWallEfficiency), pct(a.medianEfficiency), secs(p.medianAllCpuSecondsPerGiB), secs(a.medianAllCpuSecondsPerGiB), Number.isFinite(ratio) ? ratio.toFixed(2) : 'n/a'];
        }),
      ),
    });
  }

  const report: ScenarioReport = {
    scenario: 'peers',
    title: 'peers (scenario 1): one downloader, N seeders at 100 Mbit/s',
    setup: `A bridge and one network namespace per host; ${maxN} seeder hosts with their uplink capped at 100 Mbit/s (tbf), the downloader's host at 1 Gbit/s both ways, the tracker in its own host. For each N, exactly N seeders share one ${opts.sizeMiB} MiB file; a fresh downloading p2p-peerd fetches it with \`p2p get --json --strategy S\` run inside its host, ${opts.runs} run(s) per N and strategy.${hasAria2c ? ' Comparator: nginx in each of the same N seeder hosts serving the same file, aria2c in the downloader\'s host fetching it from all N at once, as many runs.' : ''}`,
    params: { sizeMiB: opts.sizeMiB, runs: opts.runs, n: counts, strategies: opts.strategies, comparators: input.comparators, seederMbit: 100, linkMbit: 1000 },
    runs,
    summary,
    targets,
    notes,
    tables,
    svg,
    elapsedSeconds: input.elapsedSeconds,
  };
  return report;
}
