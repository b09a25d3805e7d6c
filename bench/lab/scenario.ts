/**
 * What the scenarios share: the options they run with, the test file, and the arithmetic of the ideal
 * (`size / min(sum of the uplinks, the downloader's link)`) that every efficiency is measured against.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { generateFile, median, type Workspace } from '../harness.js';
import type { Comparator } from './comparator.js';
import type { ScenarioReport } from './report.js';
import { MBIT } from './lab.js';

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
