#!/usr/bin/env node
/**
 * `npm run bench:profile`: the loopback download (bench/loopback.ts, smaller: 256 MiB by default) with the
 * downloading p2p-peerd running under Clinic.js (`clinic doctor` by default, or flame, bubbleprof,
 * heapprofiler). The report lands in .clinic/ at the top of the checkout (gitignored); its path is printed.
 *
 * Clinic wraps the daemon as `clinic TOOL --dest .clinic --open=false -- node dist/peerd/main.js ...`; the
 * download is driven with `p2p get` as usual, then the daemon is stopped with SIGINT, which clinic relays
 * before it analyses what it collected. NO_INSIGHT=1 keeps clinic from asking about usage statistics, which
 * it would otherwise do (and wait for) without a terminal.
 */
import fs from 'node:fs';
import path from 'node:path';
import { assertBuilt, benchFlags, generateFile, intFlag, MIB, p2pJson, ROOT, until, Workspace } from './harness.js';
import { startPeer, startTracker, waitHolders, waitReady, type GetResult } from './swarm.js';

const TOOLS = ['doctor', 'flame', 'bubbleprof', 'heapprofiler'] as const;
type Tool = (typeof TOOLS)[number];

function parseOptions(): { tool: Tool; sizeMiB: number; peers: number; keep: boolean } {
  const values = benchFlags(
    'profile',
    'npm run bench:profile',
    {
      tool: { type: 'string', default: 'doctor' },
      'size-mib': { type: 'string', default: '256' },
      peers: { type: 'string', default: '1' },
      keep: { type: 'boolean', default: false },
    },
    [
      'usage: npm run bench:profile -- [--tool doctor|flame|bubbleprof|heapprofiler] [--size-mib N] [--peers N] [--keep]',
      '',
      '  --tool T       the Clinic.js tool to run the downloading daemon under (default doctor)',
      '  --size-mib N   size of the file downloaded (default 256)',
      '  --peers N      seeders it downloads from (default 1)',
      '  --keep         keep the temporary folder (every process\'s log, clinic\'s output)',
      '',
    ],
  );
  const int = (flag: string, v: string, min = 1): number => intFlag('profile', flag, v, min);
  if (!(TOOLS as readonly string[]).includes(values.tool)) {
    process.stderr.write(`profile: --tool must be one of ${TOOLS.join(', ')}\n`);
    process.exit(2);
  }
  return { tool: values.tool as Tool, sizeMiB: int('size-mib', values['size-mib']), peers: int('peers', values.peers), keep: values.keep };
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** The direct children of a process (here: the node that clinic started), from /proc. */
function childPids(pid: number): number[] {
  const pids: number[] = [];
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    const children = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    if (children) pids.push(...children.split(/\s+/).map(Number));
  }
  return pids;
}

/** Report files (or folders) in `dir` newer than `sinceMs`. */
function newOutputs(dir: string, sinceMs: number): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((f) => path.join(dir, f))
    .filter((p) => fs.statSync(p).mtimeMs >= sinceMs)
    .sort();
}

async function main(): Promise<void> {
  const opts = parseOptions();
  assertBuilt();
  const clinic = path.join(ROOT, 'node_modules', 'clinic', 'bin.js');
  if (!fs.existsSync(clinic)) throw new Error('clinic is not installed (it is a devDependency): run npm ci');
  const dest = path.join(ROOT, '.clinic');
  const startedMs = Date.now();
  const ws = await Workspace.create('p2p-profile', opts.keep);
  try {
    const name = `profile-${opts.sizeMiB}MiB.bin`;
    const source = path.join(await ws.mkdir('source'), name);
    log(`generating ${opts.sizeMiB} MiB of random data`);
    await generateFile(source, opts.sizeMiB);
    const { address: tracker } = await startTracker(ws);
    const seeders = await Promise.all(Array.from({ length: opts.peers }, (_, i) => startPeer(ws, `seeder${i + 1}`, tracker, { files: [source] })));
    await Promise.all(seeders.map((s) => waitReady(ws, s, 1)));

    log(`starting the downloading p2p-peerd under clinic ${opts.tool}`);
    const downloader = await startPeer(ws, 'downloader', tracker, {
      command: process.execPath,
      commandArgs: [clinic, opts.tool, '--dest', dest, '--open=false', '--'],
      env: { ...process.env, NO_INSIGHT: '1' },
    });
    await waitReady(ws, downloader, 0);
    const id = await waitHolders(downloader, name, opts.peers);
    const out = path.join(await ws.mkdir('out'), name);
    const { value: r } = await p2pJson<GetResult>(downloader.socket, ['get', id, '--out', out, '--overwrite', '--no-progress'], 1_800_000);
    log(`downloaded ${r.size / MIB} MiB from ${r.peers.length} peer(s) in ${r.seconds.toFixed(2)} s (${(r.size / MIB / r.seconds).toFixed(0)} MiB/s under the profiler)`);

    // What Ctrl-C on a terminal does: SIGINT to clinic and to the profiled daemon (its child). Doctor
    // relays it itself, but flame (0x) only closes a pipe and counts on the terminal signalling the child.
    log(`stopping the daemon; clinic ${opts.tool} analyses what it collected (this can take a minute)`);
    const profiled = childPids(downloader.proc.pid);
    downloader.proc.child.kill('SIGINT');
    for (const pid of profiled) process.kill(pid, 'SIGINT');
    await until('clinic to write its report', async () => (downloader.proc.child.exitCode !== null || downloader.proc.child.signalCode !== null ? true : undefined), 600_000, 250);
    const code = downloader.proc.child.exitCode;
    const clinicLog = fs.readFileSync(downloader.proc.logPath, 'utf8');
    const outputs = newOutputs(dest, startedMs);
    const html = outputs.filter((p) => p.endsWith('.html'));
    if (code !== 0 || html.length === 0) {
      throw new Error(`clinic ${opts.tool} exited with ${code ?? downloader.proc.child.signalCode} and wrote no report; its output:\n${clinicLog.trim().split('\n').slice(-20).join('\n')}`);
    }
    process.stdout.write(`${html.map((p) => path.relative(process.cwd(), p)).join('\n')}\n`);
    log(`clinic ${opts.tool} report: open ${html.map((p) => path.relative(process.cwd(), p)).join(', ')} in a browser (data next to it)`);
  } finally {
    await ws.cleanup();
  }
}

main().catch((err: Error) => {
  process.stderr.write(`profile: ${err.message}\n`);
  process.exit(1);
});
