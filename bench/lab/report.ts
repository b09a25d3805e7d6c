/**
 * What every scenario writes: bench/results/lab-NAME.json (everything measured, run by run),
 * lab-NAME.md (the tables and whether each target holds) and lab-NAME.svg (the chart).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { machineInfo, ROOT } from '../harness.js';

export interface TargetCheck {
  target: string;
  measured: string;
  holds: boolean;
}

export interface ScenarioReport {
  scenario: string;
  title: string;
  /** What was built and run, in a sentence or two. */
  setup: string;
  params: Record<string, unknown>;
  runs: unknown[];
  summary: unknown;
  targets: TargetCheck[];
  /** Why a target does not hold, what limits the measurement: plain sentences. */
  notes: string[];
  /** Markdown tables (already rendered), in order. */
  tables: Array<{ title: string; markdown: string }>;
  svg: string;
  elapsedSeconds: number;
  /** Set by the runner when the scenario starts (the build measured); read from git at write time otherwise. */
  engine?: { commit: string; modified: string[]; distBuiltAt?: string };
  /** Where and when it was measured; the current machine unless rendering an earlier result again. */
  machine?: ReturnType<typeof machineInfo>;
}

export function mdTable(headers: string[], rows: Array<Array<string | number>>): string {
  const line = (cells: Array<string | number>): string => `| ${cells.map((c) => String(c).replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

export function pct(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? 'n/a' : v.toFixed(2);
}

export function secs(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? 'n/a' : v.toFixed(2);
}

export function mb(bytes: number | undefined): string {
  return bytes === undefined || !Number.isFinite(bytes) ? 'n/a' : (bytes / 1e6).toFixed(0);
}

/** Which engine was measured: the commit, and the product files that differed from it. */
export function engineVersion(): { commit: string; modified: string[] } {
  const git = (args: string[]): string => {
    try {
      return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      return '';
    }
  };
  // Porcelain lines are "XY path"; X may be a space, so no trimming before the split.
  const modified = git(['status', '--porcelain', '--', 'peerd', 'daemon', 'protocol', 'cli'])
    .split('\n')
    .map((l) => /^.. (.+)$/.exec(l)?.[1])
    .filter((p): p is string => p !== undefined);
  return { commit: git(['rev-parse', '--short', 'HEAD']).trim() || 'unknown', modified };
}

export async function writeReport(dir: string, r: ScenarioReport): Promise<string[]> {
  await fsp.mkdir(dir, { recursive: true });
  const base = path.join(dir, `lab-${r.scenario}`);
  const machine = r.machine ?? machineInfo();
  const engine: { commit: string; modified: string[]; distBuiltAt?: string } = r.engine ?? engineVersion();
  const json = {
    scenario: r.scenario,
    title: r.title,
    setup: r.setup,
    machine,
    engine,
    params: r.params,
    elapsedSeconds: Math.round(r.elapsedSeconds),
    targets: r.targets,
    summary: r.summary,
    notes: r.notes,
    runs: r.runs,
  };
  const md = [
    `# Lab: ${r.title}`,
    '',
    r.setup,
    '',
    `Measured ${machine.date.slice(0, 10)} on ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, ${machine.node}, ${machine.platform}; the scenario took ${Math.round(r.elapsedSeconds)} s. Parameters: ${Object.entries(r.params)
      .map(([k, v]) => `${k} ${Array.isArray(v) && v.every((x) => typeof x !== 'object') ? v.join(',') : typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
      .join('; ')}. Engine: commit ${engine.commit}${engine.modified.length ? ` with local changes to ${engine.modified.join(', ')}` : ''}${engine.distBuiltAt ? ` (dist/ built ${engine.distBuiltAt.slice(0, 19).replace('T', ' ')} UTC, run from a snapshot)` : ''}.`,
    '',
    `![chart](lab-${r.scenario}.svg)`,
    '',
    ...r.tables.flatMap((t) => [`## ${t.title}`, '', t.markdown, '']),
    '## Targets',
    '',
    mdTable(['target', 'measured', 'holds'], r.targets.map((t) => [t.target, t.measured, t.holds ? 'yes' : '**no**'])),
    '',
    ...(r.notes.length ? ['## Notes', '', ...r.notes.map((n) => `- ${n}`), ''] : []),
    `Raw data, run by run: [lab-${r.scenario}.json](lab-${r.scenario}.json). How to read this and the lab's limits: [bench/lab/README.md](../lab/README.md).`,
    '',
  ].join('\n');
  await fsp.writeFile(`${base}.json`, `${JSON.stringify(json, null, 2)}\n`);
  await fsp.writeFile(`${base}.md`, md);
  await fsp.writeFile(`${base}.svg`, r.svg);
  return [`${base}.json`, `${base}.md`, `${base}.svg`];
}
