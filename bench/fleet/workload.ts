/**
 * What the simulated fleet shares and asks for, derived from a seed alone, so that the parent and every
 * worker process agree on every peer's files without sending them around.
 *
 * Each peer shares `filesPerPeer` files. A share of them (`popularShare`, 10% by default) are drawn
 * uniformly from a pool of `popularPool` files that many peers hold (software releases, datasets, media
 * every machine has: on average peers x popular files per peer / pool holders each); the rest are the peer's
 * own (documents, logs, backups, photos), with names built from a vocabulary of departments, projects,
 * document kinds, years and extensions, so that searches have something to match.
 */
import { createHash } from 'node:crypto';
import type { Body } from '../../protocol/index.js';
import { seededRandom as rng } from '../harness.js';

export type SharedFile = Body<'REGISTER'>['files'][number];

export interface WorkloadOptions {
  seed: number;
  filesPerPeer: number;
  /** Share of each peer's files drawn from the popular pool. */
  popularShare: number;
  /** Files in the popular pool. */
  popularPool: number;
}

function pick<T>(r: () => number, list: readonly T[]): T {
  return list[Math.floor(r() * list.length)]!;
}

const DEPARTMENTS = ['finance', 'sales', 'legal', 'research', 'ops', 'hr', 'marketing', 'support', 'engineering', 'security', 'facilities', 'procurement'] as const;
const PROJECTS = [
  'apollo', 'atlas', 'borealis', 'cassini', 'condor', 'delta', 'ember', 'falcon', 'gemini', 'helix', 'horizon', 'ion', 'juniper', 'kepler', 'lumen', 'mercury',
  'nebula', 'orion', 'pegasus', 'quasar', 'raven', 'sirius', 'titan', 'umbra', 'vega', 'willow', 'xenon', 'yukon', 'zephyr', 'aurora', 'basalt', 'cobalt',
  'dune', 'echo', 'fjord', 'granite', 'harbor', 'indigo', 'jasper', 'kestrel', 'lotus', 'meridian', 'nimbus', 'onyx', 'prism', 'quill', 'redwood', 'sable',
] as const;
const DOCUMENTS = [
  'report', 'invoice', 'budget', 'minutes', 'roadmap', 'design', 'spec', 'manual', 'contract', 'proposal', 'review', 'forecast', 'audit', 'survey',
  'summary', 'checklist', 'handbook', 'policy', 'timesheet', 'inventory', 'payroll', 'schedule', 'presentation', 'whitepaper',
] as const;
const QUALIFIERS = ['final', 'draft', 'signed', 'approved', 'internal', 'public', 'old', 'new', 'revised', 'raw', 'clean', 'v2', 'v3', 'copy'] as const;
const MONTHS = ['01', '02', '03', '04', '05', '06', '07', '08', '09', '10', '11', '12'] as const;
const YEARS = ['2019', '2020', '2021', '2022', '2023', '2024', '2025'] as const;
const DOC_EXT = ['pdf', 'docx', 'xlsx', 'pptx', 'csv', 'odt', 'txt', 'md'] as const;
const DATA_KINDS = ['backup', 'dump', 'snapshot', 'logs', 'dataset', 'export', 'archive', 'metrics', 'trace'] as const;
const DATA_EXT = ['tar.gz', 'zip', 'sql', 'jsonl', 'parquet', 'log', 'bin', 'tar.zst'] as const;
const MEDIA = ['IMG', 'DSC', 'VID', 'scan', 'screenshot', 'recording', 'webinar', 'training'] as const;
const MEDIA_EXT = ['jpg', 'png', 'mp4', 'mov', 'heic', 'mp3', 'webm'] as const;
const RELEASES = ['installer', 'firmware', 'image', 'toolkit', 'sdk', 'runtime', 'driver', 'agent', 'client', 'server', 'plugin', 'dataset', 'models'] as const;
const RELEASE_EXT = ['tar.gz', 'zip', 'iso', 'img', 'deb', 'rpm', 'msi', 'dmg', 'whl'] as const;

/** Words a user might type into `p2p search`: single words of the vocabulary. */
const SEARCH_WORDS = [...DEPARTMENTS, ...PROJECTS, ...DOCUMENTS, ...DATA_KINDS, ...RELEASES] as const;

function ownName(r: () => number, peer: number): string {
  const host = `host${String(peer).padStart(5, '0')}`;
  switch (Math.floor(r() * 4)) {
    case 0:
      return `${pick(r, DEPARTMENTS)}-${pick(r, DOCUMENTS)}-${pick(r, YEARS)}-${pick(r, MONTHS)}${r() < 0.3 ? `-${pick(r, QUALIFIERS)}` : ''}.${pick(r, DOC_EXT)}`;
    case 1:
      return `${pick(r, PROJECTS)}-${pick(r, DOCUMENTS)}-${pick(r, QUALIFIERS)}.${pick(r, DOC_EXT)}`;
    case 2:
      return `${pick(r, DATA_KINDS)}-${pick(r, PROJECTS)}-${host}-${pick(r, YEARS)}${pick(r, MONTHS)}${String(1 + Math.floor(r() * 28)).padStart(2, '0')}.${pick(r, DATA_EXT)}`;
    default:
      return `${pick(r, MEDIA)}_${String(Math.floor(r() * 10000)).padStart(4, '0')}.${pick(r, MEDIA_EXT)}`;
  }
}

function releaseName(r: () => number): string {
  return `${pick(r, PROJECTS)}-${pick(r, RELEASES)}-v${1 + Math.floor(r() * 5)}.${Math.floor(r() * 12)}.${Math.floor(r() * 20)}.${pick(r, RELEASE_EXT)}`;
}

/** A file id as the peer daemon makes it (the hash of the content): here, of a label unique to the file. */
function fileId(label: string): Buffer {
  return createHash('sha256').update(label).digest();
}

function seedFor(opts: WorkloadOptions, kind: string, n: number): number {
  return createHash('sha256').update(`${opts.seed}:${kind}:${n}`).digest().readUInt32BE(0);
}

/** Popular files made so far, by seed and number: every peer holding one shares the same object. */
const popularFiles = new Map<string, SharedFile>();

/** File `k` of the popular pool: the same id, name and size for every peer that holds it. */
export function popularFile(opts: WorkloadOptions, k: number): SharedFile {
  const key = `${opts.seed}:${k}`;
  let file = popularFiles.get(key);
  if (!file) {
    const r = rng(seedFor(opts, 'popular', k));
    file = { id: fileId(`popular:${key}`), name: releaseName(r), size: Math.floor(50e6 + r() * 4e9), complete: true };
    popularFiles.set(key, file);
  }
  return file;
}

/** How many of a peer's files come from the popular pool. */
export function popularPerPeer(opts: WorkloadOptions): number {
  return Math.min(opts.popularPool, Math.round(opts.filesPerPeer * opts.popularShare));
}

/**
 * Every file peer `peer` shares (its REGISTER), the same in every process. The ids of its own files are
 * views of one buffer: a worker holds 10,000 peers' files, and a buffer per id costs three times its bytes.
 */
export function peerFiles(opts: WorkloadOptions, peer: number): SharedFile[] {
  const r = rng(seedFor(opts, 'peer', peer));
  const popular = new Set<number>();
  const wanted = popularPerPeer(opts);
  while (popular.size < wanted) popular.add(Math.floor(r() * opts.popularPool));
  const files = [...popular].map((k) => popularFile(opts, k));
  const ids = Buffer.allocUnsafeSlow(32 * Math.max(0, opts.filesPerPeer - files.length));
  for (let i = files.length, at = 0; i < opts.filesPerPeer; i++, at += 32) {
    const id = ids.subarray(at, at + 32);
    createHash('sha256').update(`own:${opts.seed}:${peer}:${i}`).digest().copy(id);
    files.push({ id, name: ownName(r, peer), size: Math.floor(1e3 + r() ** 3 * 2e9), complete: true });
  }
  return files;
}

/**
 * What a user searches for: mostly one word of the vocabulary (`atlas`, `invoice`), some two words as
 * names join them (`finance-report`), and some the exact name of a file they were told of (found only
 * by a scan of every name).
 */
export function searchText(r: () => number, names: () => string): string {
  const x = r();
  if (x < 0.6) return pick(r, SEARCH_WORDS);
  if (x < 0.9) return `${pick(r, DEPARTMENTS)}-${pick(r, DOCUMENTS)}`;
  return names();
}

/** Holder entries of a fleet of `peers` (a peer's popular picks are distinct, so every file counts). */
export function holderEntries(opts: WorkloadOptions, peers: number): number {
  return peers * opts.filesPerPeer;
}
