/**
 * What the scenarios share: the options they run with, the test file, the arithmetic of the ideal
 * (`size / min(sum of the uplinks, the downloader's link)`) that every efficiency is measured against,
 * and the scaffold a scenario fills in (labScenario): the lab built once, runs x strategies, a log line
 * per run, the report around what the scenario measured; with the pieces most of them use (a download on
 * a fresh daemon, a run's common fields, a summary per strategy, the efficiency bar panel).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { generateFile, median, type Workspace } from '../harness.js';
import type { Comparator } from './comparator.js';
import type { ScenarioReport } from './report.js';
import { MBIT, withLab, type GetOutcome, type Lab } from './lab.js';
import { COLORS, type BarPanel } from './svg.js';

export type Strategy = 'adaptive' | 'original';
export const STRATEGIES: readonly Strategy[] = ['adaptive', 'original'];

export function isStrategy(s: string): s is Strategy {
  return (STRATEGIES as readonly string[]).includes(s);
}

export interface LabOptions {
  runs: number;
  sizeMiB: number;
  /** Scenario 1's seeder counts. */
  peerCounts: number[];
  strategies: Strategy[];
  /** Other programs measured beside the engine where a scenario has them (the peers scenario: aria2c from nginx). */
  comparators: Comparator[];
  /** Scenario 5's downloaders. */
  crowd: number;
  log: (msg: string) => void;
}

export interface ScenarioContext {
  ws: Workspace;
  opts: LabOptions;
  testFile(sizeMiB: number): Promise<TestFile>;
}

export type Scenario = (ctx: ScenarioContext) => Promise<ScenarioReport>;

export interface TestFile {
  path: string;
  name: string;
  sizeBytes: number;
  sha256: string;
}

/** The downloader's link in the lab: 1 Gbit/s, as in the issue. */
export const LINK_BPS = 1000 * MBIT;

/** Seconds the ideal download takes: the bytes at the lower of the peers' total uplink and the downloader's link. */
export function idealSeconds(sizeBytes: number, uplinksBps: number[], linkBps = LINK_BPS): number {
  const sum = uplinksBps.reduce((a, b) => a + b, 0);
  return (sizeBytes * 8) / Math.min(sum, linkBps);
}

const files = new Map<string, TestFile>();

/** One random file per size for the whole lab run (hashing it once, here, for the integrity checks). */
export async function makeTestFile(ws: Workspace, sizeMiB: number): Promise<TestFile> {
  const name = `lab-${sizeMiB}MiB.bin`;
  const existing = files.get(name);
  if (existing) return existing;
  const p = ws.path('files', name);
  await fs.promises.mkdir(ws.path('files'), { recursive: true });
  await generateFile(p, sizeMiB);
  const f: TestFile = { path: p, name, sizeBytes: sizeMiB * 1024 * 1024, sha256: await sha256File(p) };
  files.set(name, f);
  return f;
}

export function sha256File(p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    fs.createReadStream(p)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

export function med(xs: Array<number | undefined>): number {
  return median(xs.filter((x): x is number => x !== undefined && Number.isFinite(x)));
}

export function minOf(xs: Array<number | undefined>): number {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x));
  return v.length ? Math.min(...v) : NaN;
}

export function maxOf(xs: Array<number | undefined>): number {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x));
  return v.length ? Math.max(...v) : NaN;
}

/** How one run of a scenario goes, given its row (a strategy, or a comparator) and the run's number (from 1). */
export type RunOnce<Run, Row extends string = Strategy> = (row: Row, run: number) => Promise<Run>;

/** A report as a scenario gives it: the scaffold adds the scenario's name, its runs (unless given) and the time. */
export type ReportBody = Omit<ScenarioReport, 'scenario' | 'runs' | 'elapsedSeconds'> & { runs?: unknown[] };

/** What a scenario fills in; made for each invocation, so that its parts share what it computes once. */
export interface ScenarioParts<Run, Row extends string = Strategy> {
  /** The rows measured, in order: the strategies asked for unless a scenario adds comparators to them. */
  rows?: readonly Row[];
  /** Builds the network and starts what every run shares; returns how one run goes. */
  prepare(lab: Lab): Promise<RunOnce<Run, Row>>;
  /** A run's log line, after "NAME: STRATEGY run R: " (undefined: nothing to log). */
  describe(run: Run): string | undefined;
  /** The report of every run. */
  report(runs: Run[]): ReportBody;
}

/**
 * The scaffold of a scenario: the test file, the lab (torn down whatever happens), `opts.runs` rounds of
 * every strategy, a log line per run, and the report of the runs with the time the scenario took.
 */
export function labScenario<Run, Row extends string = Strategy>(name: string, parts: (ctx: ScenarioContext, file: TestFile) => ScenarioParts<Run, Row>): Scenario {
  return async (ctx) => {
    const { opts } = ctx;
    const started = performance.now();
    const file = await ctx.testFile(opts.sizeMiB);
    const scenario = parts(ctx, file);
    const runs: Run[] = [];
    await withLab(ctx.ws, async (lab) => {
      const once = await scenario.prepare(lab);
      const rows = scenario.rows ?? (opts.strategies as readonly string[] as readonly Row[]);
      await forEachRun(opts.runs, rows, async (row, r) => {
        const run = await once(row, r);
        runs.push(run);
        const line = scenario.describe(run);
        if (line !== undefined) opts.log(`${name}: ${row} run ${r}: ${line}`);
      });
    });
    return { scenario: name, runs, ...scenario.report(runs), elapsedSeconds: (performance.now() - started) / 1000 };
  };
}

/** `runs` rounds of every row (a strategy, or a comparator), in that order: round 1 of each, then round 2... */
export async function forEachRun<Row>(runs: number, rows: readonly Row[], fn: (row: Row, run: number) => Promise<void>): Promise<void> {
  for (let r = 1; r <= runs; r++) {
    for (const row of rows) await fn(row, r);
  }
}

/** `p2p get` brought the whole file. */
export function completed(out: GetOutcome, file: TestFile): boolean {
  return out.code === 0 && out.result !== undefined && out.result.size === file.sizeBytes;
}

/** Why a download failed, as the runs record it. */
export function failure(out: GetOutcome): string {
  return out.stderr || `exit code ${out.code}`;
}

/**
 * One download of `file` on a fresh downloading daemon in host dl, once the tracker lists `holders`
 * holders; the daemon is stopped and its files removed afterwards (with `verify`, the file's SHA-256 is
 * compared with the original's first).
 */
export async function freshDownload(
  lab: Lab,
  file: TestFile,
  holders: number,
  strategy: Strategy,
  get: Parameters<Lab['get']>[2] = {},
  { verify = false } = {},
): Promise<{ out: GetOutcome; ok: boolean; intact: boolean }> {
  const dl = await lab.startPeer('dl', 'dl');
  await lab.waitHolders(dl, file.name, holders);
  const out = await lab.get(dl, file.name, { strategy, ...get });
  const ok = completed(out, file);
  const intact = verify && ok && (await sha256File(out.result!.path)) === file.sha256;
  await lab.stop(dl.proc);
  await lab.removePeerFiles(dl);
  return { out, ok, intact };
}

/** The fields every run of a single download records first: which, whether it came, and the machine's load. */
export interface DownloadRun {
  strategy: Strategy;
  run: number;
  ok: boolean;
  error?: string;
  machineBusyFraction: number;
  otherBusyFraction?: number;
}

export function downloadRun(strategy: Strategy, run: number, out: GetOutcome, ok: boolean): DownloadRun {
  const r: DownloadRun = { strategy, run, ok, machineBusyFraction: out.machineBusyFraction };
  if (out.otherBusyFraction !== undefined) r.otherBusyFraction = out.otherBusyFraction;
  return r;
}

/** A run of one download, timed against the ideal: the whole download's and its steady state's (10-90%) efficiency. */
export interface TimedRun extends DownloadRun {
  seconds?: number;
  efficiency?: number;
  steadyEfficiency?: number;
}

/** What a summary row says of timed runs: how many failed, and of the others the medians and the worst efficiency. */
export function timedSummary(all: Array<Omit<TimedRun, 'strategy'>>): { failed: number; medianSeconds: number; medianEfficiency: number; minEfficiency: number; medianSteadyEfficiency: number; medianOtherBusy: number } {
  const rs = all.filter((r) => r.ok);
  return {
    failed: all.length - rs.length,
    medianSeconds: med(rs.map((r) => r.seconds)),
    medianEfficiency: med(rs.map((r) => r.efficiency)),
    minEfficiency: minOf(rs.map((r) => r.efficiency)),
    medianSteadyEfficiency: med(rs.map((r) => r.steadyEfficiency)),
    medianOtherBusy: med(rs.map((r) => r.otherBusyFraction)),
  };
}

/** One summary row per strategy: `{ strategy, ...what fn makes of its runs }`. */
export function perStrategy<Row extends string, Run extends { strategy: Row }, T extends object>(strategies: readonly Row[], runs: Run[], fn: (all: Run[], strategy: Row) => T): Array<{ strategy: Row } & T> {
  return strategies.map((strategy) => ({ strategy, ...fn(runs.filter((r) => r.strategy === strategy), strategy) }));
}

/** The strategy whose figures the targets are about: adaptive where it ran. */
export function primaryOf<T extends { strategy: string }>(summary: T[]): T {
  return summary.find((x) => x.strategy === 'adaptive') ?? summary[0]!;
}

export function strategyColor(s: string): string {
  return s === 'adaptive' ? COLORS.adaptive : s === 'aria2c' ? COLORS.aria2c : COLORS.original;
}

/** The share of the machine other work took, for a table ('n/a' without a cgroup to tell). */
export function busyPercent(fraction: number): string {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)}%` : 'n/a';
}

/** A note for each run that failed. */
export function failedNotes(runs: Array<{ strategy: string; run: number; ok: boolean; error?: string }>): string[] {
  return runs.filter((x) => !x.ok).map((r) => `${r.strategy} run ${r.run} failed: ${r.error}`);
}

/** A bar panel of each strategy's efficiencies (one bar per category), with the target line. */
export function efficiencyPanel<T extends { strategy: string }>(
  summary: T[],
  p: { title: string; yMax: number; categories: string[]; values: (x: T) => Array<number | undefined>; target: { y: number; label: string } },
): BarPanel {
  return {
    kind: 'bar',
    title: p.title,
    yLabel: 'efficiency',
    yMax: p.yMax,
    categories: p.categories,
    groups: summary.map((x) => ({ name: x.strategy, color: strategyColor(x.strategy), values: p.values(x) })),
    refLines: [p.target],
    format: (v) => v.toFixed(2),
  };
}

/** The efficiency panel of the whole download and of its steady state (10-90% of the file). */
export function wholeAndSteadyPanel<T extends { strategy: string; medianEfficiency: number; medianSteadyEfficiency: number }>(summary: T[], title: string, target: { y: number; label: string }): BarPanel {
  return efficiencyPanel(summary, { title, yMax: 1.1, categories: ['whole download', 'steady state (10-90%)'], values: (x) => [x.medianEfficiency, x.medianSteadyEfficiency], target });
}
