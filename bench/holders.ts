/**
 * `npm run bench:holders`: what the holder table costs one tracker, in process, at fleet sizes the fleet
 * benchmark cannot reach on one machine (issue 12: 20,000 peers × 100 files).
 *
 *   npm run bench:holders -- [--peers 20000] [--files 100] [--seed 12] [--results FILE]
 *
 * Every peer's REGISTER is the fleet workload's (bench/fleet/workload.ts: the same names, ids and
 * popular pool), turned into the replicated op and parsed back from its JSON as a backup parses it, then
 * applied by TrackerState as every tracker applies it. Reported:
 *
 * - bytes per holder entry: the JS heap (after a full GC) and the array buffers (the search index's
 *   postings) the table grew by, over the entries; the target is under 300 bytes in all;
 * - applying a REGISTER: its median and p99 over every peer (the decode of the JSON not included);
 * - a snapshot for a backup: how long the main takes to take it, and the longest part made, serialized,
 *   parsed and installed (what holds either side's loop longest);
 * - LOOKUP and SEARCH answered in process on the full table (searches as the fleet's: a word, two words,
 *   or an exact name; limit 10,000 as `p2p search` asks); a SEARCH also with its answer encoded as the
 *   tracker's Connection.reply encodes it, and the full collections of the heap the searches caused.
 *
 * Needs `--expose-gc` (the npm script passes it).
 */
import fs from 'node:fs';
import os from 'node:os';
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { searchAnswer } from '../daemon/holders.js';
import { decodeOp, encodeOp } from '../daemon/ops.js';
import { frameBuffers } from '../protocol/frame-buffers.js';
import { encodeFrameWith } from '../protocol/framer.js';
import type { SnapshotRecord } from '../daemon/ops.js';
import { MAX_BATCH_BYTES } from '../daemon/raft/messages.js';
import { TrackerState } from '../daemon/state.js';
import { Store } from '../daemon/store.js';
import { peerFiles, searchText } from './fleet/workload.js';
import { benchFlags, intFlag, percentile, seededRandom } from './harness.js';

function parseOptions(): { peers: number; files: number; seed: number; results: string | undefined } {
  const values = benchFlags(
    'bench:holders',
    'npm run bench:holders',
    {
      peers: { type: 'string', default: '20000' },
      files: { type: 'string', default: '100' },
      seed: { type: 'string', default: '12' },
      results: { type: 'string' },
    },
    [
      'usage: npm run bench:holders -- [--peers N] [--files N] [--seed N] [--results FILE]',
      '',
      '  --peers N       peers registered (default 20000)',
      '  --files N       files each shares (default 100)',
      '  --seed N        the fleet workload follows from it (default 12)',
      '  --results FILE  also write the table there (default: print only)',
      '',
    ],
  );
  return {
    peers: intFlag('bench:holders', 'peers', values.peers),
    files: intFlag('bench:holders', 'files', values.files),
    seed: intFlag('bench:holders', 'seed', values.seed, 0),
    results: values.results,
  };
}

function memory(): { heap: number; arrayBuffers: number; rss: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc (npm run bench:holders does)');
  gc();
  gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, arrayBuffers: m.arrayBuffers, rss: m.rss };
}

function ms(x: number): string {
  return x < 1 ? x.toFixed(3) : x.toFixed(2);
}

function peerId(n: number): string {
  return n.toString(16).padStart(64, '0');
}

const opts = parseOptions();
const workload = { seed: opts.seed, filesPerPeer: opts.files, popularShare: 0.1, popularPool: 1000 };
const state = new TrackerState(new Store(':memory:'));
const before = memory();

const applyMs: number[] = [];
let index = 0;
for (let n = 0; n < opts.peers; n++) {
  const files = peerFiles(workload, n).map((f) => ({ id: f.id.toString('hex'), name: f.name, size: f.size, complete: f.complete }));
  const text = encodeOp({ op: 'register', peer: { peerId: peerId(n), publicKey: peerId(n), host: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, port: 7000 }, files });
  const op = decodeOp(text);
  const t0 = performance.now();
  state.apply({ index: ++index, term: 1, op });
  applyMs.push(performance.now() - t0);
}
const after = memory();
const { holders } = state.holders.sizes();

const r = seededRandom(opts.seed);
const lookupMs: number[] = [];
const searchMs: number[] = [];
for (let i = 0; i < 20_000; i++) {
  const n = Math.floor(r() * opts.peers);
  const file = peerFiles(workload, n)[Math.floor(r() * opts.files)]!;
  const id = file.id.toString('hex');
  const t0 = performance.now();
  state.holders.lookup(id);
  lookupMs.push(performance.now() - t0);
}
const answerMs: number[] = [];
const majorGcs: number[] = [];
// Only collections that began during the searches: Node delivers entries late, so the bench's own forced
// collections (memory(), just before) could reach the observer too.
const searchesStart = performance.now();
const countMajor = (entries: readonly PerformanceEntry[]): void => {
  for (const e of entries) {
    if (e.startTime >= searchesStart && (e as unknown as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majorGcs.push(e.duration);
  }
};
const gcWatch = new PerformanceObserver((list) => countMajor(list.getEntries()));
gcWatch.observe({ entryTypes: ['gc'] });
for (let i = 0; i < 2_000; i++) {
  const text = searchText(r, () => peerFiles(workload, Math.floor(r() * opts.peers))[0]!.name);
  const t0 = performance.now();
  const result = state.holders.search(text, 10_000);
  const t1 = performance.now();
  // Encoded as the tracker answers it: Connection.reply's encoding, into the reused frame memory.
  const { taken } = encodeFrameWith('SEARCH_RESULT', 1, searchAnswer(result), frameBuffers);
  answerMs.push(performance.now() - t0);
  searchMs.push(t1 - t0);
  if (taken) frameBuffers.give(taken);
  // A turn of the event loop between searches, as a tracker has between requests: V8 marks the heap in
  // steps between turns, and a loop that never yields leaves all of it to one long pause.
  await new Promise((resolve) => setImmediate(resolve));
}
// Node hands the collections of a synchronous loop to the observer only once the loop yields, through
// its callback a turn or more later: wait for them, and take any still queued.
await new Promise((resolve) => setTimeout(resolve, 50));
countMajor(gcWatch.takeRecords());
gcWatch.disconnect();

// A snapshot for a backup: taken by the main at once, then made and serialized a part at a time as the
// parts go out (RaftNode.serializePart), and installed by the backup a part at a time as they arrive (the
// backup's copy is in this process too, so its collections are those of both heaps). A turn of the loop
// between parts, as between two messages.
const takeStart = performance.now();
const source = state.snapshot(0);
const takeMs = performance.now() - takeStart;
const copy = new TrackerState(new Store(':memory:'));
const install = copy.beginInstall();
const partMs: number[] = [];
const installMs: number[] = [];
for (let at = 0; at < source.length; ) {
  const t0 = performance.now();
  let part = '';
  for (; at < source.length; at++) {
    const line = JSON.stringify(source.at(at)) + '\n';
    if (part.length > 0 && part.length + line.length > MAX_BATCH_BYTES) break;
    part += line;
  }
  const t1 = performance.now();
  const records: SnapshotRecord[] = [];
  for (const line of part.split('\n')) if (line) records.push(JSON.parse(line) as SnapshotRecord);
  install.add(records);
  partMs.push(t1 - t0);
  installMs.push(performance.now() - t1);
  await new Promise((resolve) => setImmediate(resolve));
}
const finishStart = performance.now();
install.finish();
const finishMs = performance.now() - finishStart;
if (copy.sizes().holders !== state.sizes().holders) throw new Error('the snapshot installed does not hold every entry');
copy.store.close();

const heapPer = (after.heap - before.heap) / holders;
const buffersPer = (after.arrayBuffers - before.arrayBuffers) / holders;
const rows = [
  `| peers | holder entries | JS heap B/entry | typed arrays B/entry | total B/entry | RSS MB | apply REGISTER ms p50 / p99 | LOOKUP ms p50 / p99 | SEARCH ms p50 / p99 | SEARCH answered (encoded) ms p50 / p99 | full GCs while searching (longest ms) |`,
  `|---:|---:|---:|---:|---:|---:|---|---|---|---|---|`,
  `| ${opts.peers.toLocaleString('en-US')} | ${holders.toLocaleString('en-US')} | ${heapPer.toFixed(0)} | ${buffersPer.toFixed(0)} | **${(heapPer + buffersPer).toFixed(0)}** | ${(after.rss / 2 ** 20).toFixed(0)} | ${ms(percentile(applyMs, 50))} / ${ms(percentile(applyMs, 99))} | ${ms(percentile(lookupMs, 50))} / ${ms(percentile(lookupMs, 99))} | ${ms(percentile(searchMs, 50))} / ${ms(percentile(searchMs, 99))} | ${ms(percentile(answerMs, 50))} / ${ms(percentile(answerMs, 99))} | ${majorGcs.length} (${majorGcs.length ? Math.max(...majorGcs).toFixed(0) : '-'}) |`,
];
const snapshotRows = [
  `| snapshot parts | taken by the main ms | a part made and serialized ms p50 / max | a part parsed and installed ms p50 / max | all parts installed, s of work | finish ms |`,
  `|---:|---:|---|---|---:|---:|`,
  `| ${partMs.length} | ${takeMs.toFixed(0)} | ${ms(percentile(partMs, 50))} / ${ms(Math.max(...partMs))} | ${ms(percentile(installMs, 50))} / ${ms(Math.max(...installMs))} | ${(installMs.reduce((a, b) => a + b, 0) / 1000).toFixed(1)} | ${finishMs.toFixed(1)} |`,
];
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const report = [
  '# Holder table in process: memory and time per entry',
  '',
  `Command: \`npm run bench:holders -- --peers ${opts.peers} --files ${opts.files} --seed ${opts.seed}\` (bench/holders.ts). Node ${process.version}, ${os.cpus().length} × ${cpu}, ${new Date().toISOString()}.`,
  '',
  ...rows,
  '',
  ...snapshotRows,
  '',
  'Bytes per entry: what the JS heap (after a full GC) and the array buffers (the search postings, the sizes) grew by while every REGISTER was applied, over the holder',
  "entries. Apply: TrackerState.apply of one peer's REGISTER op, parsed from its JSON first as a backup does (the parse not timed).",
  'LOOKUP and SEARCH: the table\'s own answer, in process, 20,000 lookups of random held files and 2,000 searches as the fleet asks them (hits in the',
  "index's order; the peer daemon sorts them by name). SEARCH answered: the search and its SEARCH_RESULT frame encoded as the tracker's Connection.reply",
  'encodes it. Full GCs: collections of the whole heap during the searches (PerformanceObserver), which stop the tracker for their length.',
  '',
  "Snapshot: what a backup that lost its holder lists is sent. The main takes it at once (TrackerState.snapshot: the lists captured by reference),",
  'then makes and serializes each part of at most MAX_BATCH_BYTES as it goes out; the backup parses and installs each as it arrives',
  "(TrackerState.beginInstall), into a table of its own that replaces the state at finish. The longest of these is the longest that",
  "a tracker's loop is held by a snapshot: the main's must stay well under --failover-ms (1,000 ms by default), or it takes itself for frozen.",
  'Both sides run in this one process, with both heaps, so a part can include a collection of both.',
  '',
].join('\n');
process.stdout.write(`${rows.join('\n')}\n\n${snapshotRows.join('\n')}\n`);
if (opts.results) fs.writeFileSync(opts.results, report);
