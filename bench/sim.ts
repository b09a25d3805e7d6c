/**
 * `npm run bench:sim`: runs many schedules of the deterministic cluster simulation (bench/cluster-sim.ts)
 * on every core, and writes what it found to bench/results/sim.md.
 *
 *   npm run bench:sim -- [--schedules 100000] [--seed S] [--jobs N] [--results FILE]
 *
 * Seeds are S, S+1, ...; each schedule's cluster size follows from its seed (2, 3 or 5 trackers). A failing
 * seed replays exactly: `npm run bench:sim -- --replay SEED`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { DEFAULT_SIM, runSchedule } from './cluster-sim.js';

/** The cluster size a seed runs with: two and three trackers most, five some. */
export function sizeOf(seed: number): number {
  const r = seed % 10;
  return r < 4 ? 2 : r < 9 ? 3 : 5;
}

interface Job {
  from: number;
  count: number;
  stride: number;
}

interface Tally {
  schedules: number;
  bySize: Record<number, number>;
  failures: Array<{ seed: number; trackers: number; violations: string[] }>;
  acked: number;
  mains: number;
  faults: Record<string, number>;
}

function runJob(job: Job, progress: (done: number) => void): Tally {
  const t: Tally = { schedules: 0, bySize: {}, failures: [], acked: 0, mains: 0, faults: {} };
  for (let i = 0; i < job.count; i++) {
    const seed = job.from + i * job.stride;
    const trackers = sizeOf(seed);
    const r = runSchedule(seed, { ...DEFAULT_SIM, trackers });
    t.schedules++;
    t.bySize[trackers] = (t.bySize[trackers] ?? 0) + 1;
    t.acked += r.writes.acked;
    t.mains += r.mains;
    for (const [k, v] of Object.entries(r.faults)) t.faults[k] = (t.faults[k] ?? 0) + v;
    if (r.violations.length > 0) t.failures.push({ seed, trackers, violations: r.violations.slice(0, 5) });
    if (i % 200 === 199) progress(200);
  }
  return t;
}

if (!isMainThread && (workerData as { sim?: boolean } | null)?.sim) {
  const tally = runJob(workerData as Job, (n) => parentPort!.postMessage({ progress: n }));
  parentPort!.postMessage({ tally });
} else if (isMainThread && process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const opt = (name: string, dflt: string): string => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
  };
  const replay = args.indexOf('--replay');
  if (replay >= 0) {
    const seed = Number(args[replay + 1]);
    const r = runSchedule(seed, { ...DEFAULT_SIM, trackers: sizeOf(seed) });
    console.log(r.trace.join('\n'));
    console.log(JSON.stringify({ seed, trackers: r.trackers, violations: r.violations, writes: r.writes, faults: r.faults }, null, 1));
    process.exit(r.violations.length > 0 ? 1 : 0);
  }
  const schedules = Number(opt('schedules', '100000'));
  const seed = Number(opt('seed', '1'));
  const jobs = Number(opt('jobs', String(os.availableParallelism())));
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const results = opt('results', path.join(root, 'bench', 'results', 'sim.md'));
  const started = Date.now();
  let done = 0;
  const tallies = await Promise.all(
    Array.from({ length: jobs }, (_, k) => {
      const count = Math.floor(schedules / jobs) + (k < schedules % jobs ? 1 : 0);
      return new Promise<Tally>((resolve, reject) => {
        const w = new Worker(fileURLToPath(import.meta.url), { workerData: { sim: true, from: seed + k, count, stride: jobs } });
        w.on('message', (m: { progress?: number; tally?: Tally }) => {
          if (m.progress) {
            done += m.progress;
            if (done % 5000 < m.progress) process.stderr.write(`${done} / ${schedules} schedules, ${Math.round((Date.now() - started) / 1000)} s\n`);
          }
          if (m.tally) resolve(m.tally);
        });
        w.on('error', reject);
      });
    }),
  );
  const total: Tally = { schedules: 0, bySize: {}, failures: [], acked: 0, mains: 0, faults: {} };
  for (const t of tallies) {
    total.schedules += t.schedules;
    for (const [k, v] of Object.entries(t.bySize)) total.bySize[Number(k)] = (total.bySize[Number(k)] ?? 0) + v;
    total.failures.push(...t.failures);
    total.acked += t.acked;
    total.mains += t.mains;
    for (const [k, v] of Object.entries(t.faults)) total.faults[k] = (total.faults[k] ?? 0) + v;
  }
  const seconds = Math.round((Date.now() - started) / 1000);
  const lines = [
    '# Cluster simulation',
    '',
    `Run on ${new Date().toISOString().slice(0, 10)} with \`npm run bench:sim -- --schedules ${schedules} --seed ${seed}\` (${jobs} workers, ${os.cpus()[0]?.model ?? 'unknown CPU'}).`,
    `Each schedule: ${DEFAULT_SIM.faultMs} ms of virtual time with faults and writes; then, on odd seeds with three or more trackers, every tracker up with a random majority connected and each other link cut with probability 1/2 (${12 * DEFAULT_SIM.failoverMs + 40 * DEFAULT_SIM.heartbeatMs} ms: a main must commit a write and keep command for the last ${4 * DEFAULT_SIM.failoverMs} ms); then everything healed and ${DEFAULT_SIM.settleMs} ms to settle; heartbeat ${DEFAULT_SIM.heartbeatMs} ms, failover ${DEFAULT_SIM.failoverMs} ms.`,
    '',
    '| | |',
    '|---|---|',
    `| schedules | ${total.schedules} (${Object.entries(total.bySize).map(([k, v]) => `${v} with ${k} trackers`).join(', ')}) |`,
    `| seeds | ${seed} to ${seed + schedules - 1} |`,
    `| wall time | ${seconds} s |`,
    `| writes acknowledged | ${total.acked} |`,
    `| mains elected | ${total.mains} |`,
    `| faults injected | ${Object.entries(total.faults).map(([k, v]) => `${v} ${k}`).join(', ')} |`,
    `| schedules that broke a guarantee | ${total.failures.length} |`,
    '',
    ...(total.failures.length > 0 ? ['Failing seeds (replay with `npm run bench:sim -- --replay SEED`):', '', ...total.failures.slice(0, 50).map((f) => `- ${f.seed} (${f.trackers} trackers): ${f.violations.join('; ')}`)] : ['Every schedule kept every guarantee.']),
    '',
  ];
  fs.mkdirSync(path.dirname(results), { recursive: true });
  fs.writeFileSync(results, lines.join('\n'));
  console.log(lines.join('\n'));
  process.exit(total.failures.length > 0 ? 1 : 0);
}
