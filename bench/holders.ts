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
 * - LOOKUP and SEARCH answered in process on the full table (searches as the fleet's: a word, two words,
 *   or an exact name; limit 10,000 as `p2p search` asks).
 *
 * Needs `--expose-gc` (the npm script passes it).
 */
import fs from 'node:fs';
import os from 'node:os';
import { decodeOp, encodeOp } from '../daemon/ops.js';
import { TrackerState } from '../daemon/state.js';
import { Store } from '../daemon/store.js';
import { peerFiles, searchText } from './fleet/workload.js';
import { seededRandom } from './harness.js';

interface Options {
  peers: number;
  files: number;
  seed: number;
  results: string | undefined;
}

function parseOptions(argv: string[]): Options {
  const o: Options = { peers: 20_000, files: 100, seed: 12, results: undefined };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--peers') o.peers = Number(value);
    else if (flag === '--files') o.files = Number(value);
    else if (flag === '--seed') o.seed = Number(value);
    else if (flag === '--results') o.results = value;
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!Number.isInteger(o.peers) || o.peers < 1 || !Number.isInteger(o.files) || o.files < 1) throw new Error('--peers and --files take positive integers');
  return o;
}

function memory(): { heap: number; arrayBuffers: number; rss: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc (npm run bench:holders does)');
  gc();
  gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, arrayBuffers: m.arrayBuffers, rss: m.rss };
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function ms(x: number): string {
  return x < 1 ? x.toFixed(3) : x.toFixed(2);
}

function peerId(n: number): string {
  return n.toString(16).padStart(64, '0');
}

const opts = parseOptions(process.argv.slice(2));
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
for (let i = 0; i < 2_000; i++) {
  const text = searchText(r, () => peerFiles(workload, Math.floor(r() * opts.peers))[0]!.name);
  const t0 = performance.now();
  state.holders.search(text, 10_000);
  searchMs.push(performance.now() - t0);
}
for (const a of [applyMs, lookupMs, searchMs]) a.sort((x, y) => x - y);

const heapPer = (after.heap - before.heap) / holders;
const buffersPer = (after.arrayBuffers - before.arrayBuffers) / holders;
const rows = [
  `| peers | holder entries | JS heap B/entry | typed arrays B/entry | total B/entry | RSS MB | apply REGISTER ms p50 / p99 | LOOKUP ms p50 / p99 | SEARCH ms p50 / p99 |`,
  `|---:|---:|---:|---:|---:|---:|---|---|---|`,
  `| ${opts.peers.toLocaleString('en-US')} | ${holders.toLocaleString('en-US')} | ${heapPer.toFixed(0)} | ${buffersPer.toFixed(0)} | **${(heapPer + buffersPer).toFixed(0)}** | ${(after.rss / 2 ** 20).toFixed(0)} | ${ms(quantile(applyMs, 0.5))} / ${ms(quantile(applyMs, 0.99))} | ${ms(quantile(lookupMs, 0.5))} / ${ms(quantile(lookupMs, 0.99))} | ${ms(quantile(searchMs, 0.5))} / ${ms(quantile(searchMs, 0.99))} |`,
];
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const report = [
  '# Holder table in process: memory and time per entry',
  '',
  `Command: \`npm run bench:holders -- --peers ${opts.peers} --files ${opts.files} --seed ${opts.seed}\` (bench/holders.ts). Node ${process.version}, ${os.cpus().length} × ${cpu}, ${new Date().toISOString()}.`,
  '',
  ...rows,
  '',
  'Bytes per entry: what the JS heap (after a full GC) and the array buffers (the search postings, the sizes) grew by while every REGISTER was applied, over the holder',
  "entries. Apply: TrackerState.apply of one peer's REGISTER op, parsed from its JSON first as a backup does (the parse not timed).",
  'LOOKUP and SEARCH: the table\'s own answer, in process, 20,000 lookups of random held files and 2,000 searches as the fleet asks them.',
  '',
].join('\n');
process.stdout.write(`${rows.join('\n')}\n`);
if (opts.results) fs.writeFileSync(opts.results, report);
