/**
 * node dist/bench/perf-threads.js PERF.DATA PID [HZ]
 *
 * Where a process's CPU went, by thread, from a `perf record -a -g -F HZ` capture (see
 * bench/perf-compare.sh): the main thread, the hash worker, libuv's threadpool (file writes), V8's
 * garbage-collector helpers; and the leaf functions, kernel included. perf's cpu-clock samples count CPU
 * time actually run, unlike V8's --cpu-prof, which counts the wall time a descheduled main thread spends in
 * its current function.
 */
import { execFileSync } from 'node:child_process';

function main(): void {
  const [data, pid, hzArg] = process.argv.slice(2);
  if (!data || !pid) {
    process.stderr.write('usage: node dist/bench/perf-threads.js PERF.DATA PID [HZ]\n');
    process.exit(2);
  }
  const hz = Number(hzArg ?? 999);
  const out = execFileSync('perf', ['script', '-i', data, '--pid', pid], { maxBuffer: 1 << 30, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const perThread = new Map<string, Map<string, number>>();
  for (const block of out.split('\n\n')) {
    const lines = block.split('\n').filter((l) => l.trim() !== '');
    const tid = /^\s*\S+\s+(\d+)/.exec(lines[0] ?? '')?.[1];
    if (!tid) continue;
    const leaf = (lines[1]?.trim().split(/\s+/)[1] ?? '?').split('+')[0]!;
    const syms = perThread.get(tid) ?? new Map<string, number>();
    syms.set(leaf, (syms.get(leaf) ?? 0) + 1);
    perThread.set(tid, syms);
  }
  const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
  const role = (tid: string, syms: Map<string, number>): string => {
    const n = sum(syms);
    const share = (re: RegExp): number => [...syms].filter(([s]) => re.test(s)).reduce((a, [, c]) => a + c, 0) / n;
    if (tid === pid) return 'main thread';
    if (share(/^sha256_block/) > 0.2) return 'hash worker';
    if (share(/copy_folio_from_iter|generic_perform_write|ext4_/) > 0.1) return 'libuv threadpool (file I/O)';
    if (share(/Marking|Sweep|Scaveng|Evacuat/) > 0.2) return 'V8 GC helpers';
    return 'other threads';
  };
  const roles = new Map<string, number>();
  const leaves = new Map<string, number>();
  let total = 0;
  for (const [tid, syms] of perThread) {
    const n = sum(syms);
    total += n;
    const r = role(tid, syms);
    roles.set(r, (roles.get(r) ?? 0) + n);
    for (const [s, c] of syms) leaves.set(s, (leaves.get(s) ?? 0) + c);
  }
  const pct = (n: number): string => `${((100 * n) / Math.max(1, total)).toFixed(1)}%`;
  const lines = [`pid ${pid}: ${total} samples, ${(total / hz).toFixed(2)} CPU s at ${hz} Hz`, '', '| thread | CPU s | share |', '|---|---:|---:|'];
  for (const [r, n] of [...roles].sort((a, b) => b[1] - a[1])) lines.push(`| ${r} | ${(n / hz).toFixed(2)} | ${pct(n)} |`);
  lines.push('', '| leaf function | CPU s | share |', '|---|---:|---:|');
  for (const [s, n] of [...leaves].sort((a, b) => b[1] - a[1]).slice(0, 12)) lines.push(`| ${s.replace(/\|/g, '\\|').slice(0, 90)} | ${(n / hz).toFixed(2)} | ${pct(n)} |`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main();
