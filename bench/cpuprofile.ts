/**
 * node dist/bench/cpuprofile.js FILE.cpuprofile [--top N]
 *
 * Summarises a V8 CPU profile (from `node --cpu-prof`, e.g. through `npm run bench --
 * --downloader-node-args="--cpu-prof --cpu-prof-dir=DIR"`): the share of busy samples by self time per
 * function, and by group (garbage collector, hashing, signatures, the write path, socket reads...), so a
 * before/after pair of profiles can be compared in a table. Idle samples are left out of the shares.
 */
import fs from 'node:fs';
import path from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Groups by the self frame's name and file; the first match wins. */
const GROUPS: Array<[string, RegExp]> = [
  ['garbage collector', /^\(garbage collector\)/],
  ['SHA-256', /^(digest|update|createHash|Hash|sha256|hash)\b.*(crypto|identity|manifest)/],
  ['Ed25519 sign/verify', /^(sign|verify|signOneShot|verifyOneShot|createPublicKey|createPrivateKey)\b/],
  ['file I/O (JS side)', /(fs\/promises|internal\/fs)/],
  ['socket reads', /(onStreamRead|stream_base_commons|readableAddChunk|net\.js)/],
  ['socket writes', /(writeGeneric|writevGeneric|_writeGeneric|Writable|handleWriteReq)/],
  ['buffer copies and allocation', /^(copy|allocUnsafe|alloc|concat|from|subarray|_copyActual)\b/],
  ['framing and codecs', /(protocol\/(framer|codec|messages|connection))/],
  ['program (native, not JS)', /^\(program\)/],
];

function main(): void {
  const file = process.argv[2];
  const topArg = process.argv.indexOf('--top');
  const top = topArg > 0 ? Number(process.argv[topArg + 1]) : 25;
  if (!file) {
    process.stderr.write('usage: node dist/bench/cpuprofile.js FILE.cpuprofile [--top N]\n');
    process.exit(2);
  }
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < prof.samples.length; i++) {
    const id = prof.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
  }
  const byName = new Map<string, number>();
  const byGroup = new Map<string, number>();
  let busy = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    const fn = n.callFrame.functionName || '(anonymous)';
    if (fn === '(idle)') {
      idle += us;
      continue;
    }
    busy += us;
    const where = n.callFrame.url ? `${path.basename(n.callFrame.url)}:${n.callFrame.lineNumber + 1}` : '';
    const key = where ? `${fn} ${where}` : fn;
    byName.set(key, (byName.get(key) ?? 0) + us);
    const label = `${fn} ${n.callFrame.url}`;
    const group = GROUPS.find(([, re]) => re.test(label))?.[0] ?? 'other JS';
    byGroup.set(group, (byGroup.get(group) ?? 0) + us);
  }
  const pct = (us: number): string => `${((100 * us) / Math.max(1, busy)).toFixed(1)}%`;
  const out: string[] = [];
  out.push(`${path.basename(file)}: ${(busy / 1e6).toFixed(2)} s busy on the main thread, ${(idle / 1e6).toFixed(2)} s idle`);
  out.push('', '| group | share of busy samples | s |', '|---|---:|---:|');
  for (const [g, us] of [...byGroup].sort((a, b) => b[1] - a[1])) out.push(`| ${g} | ${pct(us)} | ${(us / 1e6).toFixed(2)} |`);
  out.push('', '| self time, top functions | share | s |', '|---|---:|---:|');
  for (const [k, us] of [...byName].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`| ${k.replace(/\|/g, '\\|')} | ${pct(us)} | ${(us / 1e6).toFixed(2)} |`);
  process.stdout.write(`${out.join('\n')}\n`);
}

main();
