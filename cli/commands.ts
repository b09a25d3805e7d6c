/**
 * What each `p2p` command does once its arguments are known: one handler per command in a table, driven
 * by an Invocation from either parser (cli/fast-path.ts or cli/arguments.ts). Heavy modules that only one
 * command needs (cli-progress, readline, the admin client) are imported by that command alone.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
// The client entry points, not the index ones: ESM evaluates every module an entry point re-exports, so
// '../peerd/index.js' would load the whole daemon and better-sqlite3, and '../protocol/index.js' the
// identity and manifest code, at every `p2p` start (issue 8).
import { inNameOrder, MAX_SEARCH_HITS, P2PError, type StrategyName } from '../protocol/client.js';
import { ControlClient, type DownloadResult, type SearchInfo } from '../peerd/client.js';
import type { AdminClient } from './admin.js';
import { formatBytes, formatRate, table } from './format.js';

export const PROGRAM = 'p2p';

export const EXIT = { ok: 0, failed: 1, usage: 2, notFound: 3, refused: 4 } as const;

export function exitCodeFor(code: string): number {
  if (code === 'P2P_NOT_FOUND') return EXIT.notFound;
  if (code === 'P2P_BLACKLISTED' || code === 'P2P_UNAUTHORIZED') return EXIT.refused;
  return EXIT.failed;
}

/** The flags every command accepts. */
export interface Globals {
  socket?: string | undefined;
  json: boolean;
}

interface AdminArgs {
  globals: Globals;
  tracker: string;
  tokenFile: string;
}

/** Each command's arguments, already checked and converted. */
interface CommandArgs {
  status: { globals: Globals };
  files: { globals: Globals };
  share: { globals: Globals; paths: string[] };
  unshare: { globals: Globals; key: string };
  search: { globals: Globals; text: string; limit?: number | undefined };
  get: {
    globals: Globals;
    key: string;
    out: string | undefined;
    overwrite: boolean | undefined;
    maxPeers: number | undefined;
    progress: boolean;
    strategy: StrategyName | undefined;
  };
  transfers: { globals: Globals };
  report: { globals: Globals; key: string; reason: string };
  'admin status': AdminArgs;
  'admin reports': AdminArgs;
  'admin blacklist ls': AdminArgs;
  'admin blacklist add': AdminArgs & { target: string; reason: string };
  'admin blacklist rm': AdminArgs & { target: string };
}

export type CommandName = keyof CommandArgs;

/** One parsed command line: the command and its arguments. */
export type Invocation = { [C in CommandName]: { command: C } & CommandArgs[C] }[CommandName];

function defaultSocket(): string {
  return process.env.P2P_SOCKET || path.join(os.homedir(), '.p2pshare', 'peerd.sock');
}

function out(g: Globals, json: unknown, human: () => string): void {
  if (g.json) process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
  else {
    const text = human();
    if (text) process.stdout.write(`${text}\n`);
  }
}

/**
 * A search's hits and whether more matched ('perhaps' when that cannot be known). A peer daemon of 0.1
 * has no `searchResult` (it answers P2P_BAD_REQUEST "unknown command 'searchResult'"; builds between
 * then and this one P2P_UNEXPECTED_MESSAGE, saying the same), ignores `limit` and does not sort: its
 * hits are cut to the limit and put in name order here. Cut here, more did match; exactly as many as a
 * tracker answers at most, more perhaps did.
 */
async function searchResult(c: ControlClient, text: string, limit: number | undefined): Promise<{ hits: SearchInfo[]; truncated: boolean | 'perhaps' }> {
  try {
    return await c.call('searchResult', { text, limit });
  } catch (err) {
    if (!(err instanceof P2PError) || !/unknown command 'searchResult'/.test(err.message)) throw err;
  }
  const all = await c.call('search', { text, limit });
  const hits = inNameOrder(all, (h) => h.name, (h) => h.id).slice(0, limit ?? MAX_SEARCH_HITS);
  return { hits, truncated: all.length > hits.length ? true : all.length >= MAX_SEARCH_HITS ? 'perhaps' : false };
}

/** What `p2p search` says on stderr when its list may not hold every match. */
function searchCutNote(shown: number, truncated: boolean | 'perhaps', limit: number | undefined): string {
  const raise = limit !== undefined && limit < MAX_SEARCH_HITS ? ` or raise --limit (up to ${MAX_SEARCH_HITS})` : '';
  const cut = truncated === 'perhaps' ? 'more files may match' : 'more files match';
  return `p2p: ${cut}; these are ${shown} of them (the first the tracker found, listed by name). Narrow TEXT${raise} to see others.\n`;
}

async function withDaemon<T>(g: Globals, fn: (c: ControlClient) => Promise<T>): Promise<T> {
  const c = await ControlClient.connect(g.socket ?? defaultSocket());
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

async function confirm(question: string): Promise<boolean> {
  const { default: readline } = await import('node:readline/promises');
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question} [y/N] `);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

function printGet(r: DownloadResult & { alreadyPresent?: true }): string {
  if (r.alreadyPresent) return `${r.name}: ${r.path} already is this file (id ${r.id}); nothing downloaded`;
  const lines = [`${r.name}: ${formatBytes(r.size)} in ${r.seconds.toFixed(2)} s (${formatRate(r.size / Math.max(r.seconds, 0.001))}) -> ${r.path}`, `id ${r.id}`];
  if (r.resumedChunks > 0) lines.push(`resumed: ${r.resumedChunks} chunks were already verified on disk`);
  lines.push(table(['peer', 'address', 'bytes', 'chunks', 'share'], r.peers.map((p) => [p.id.slice(0, 16), p.address, formatBytes(p.bytes), p.chunks, `${r.size ? ((100 * p.bytes) / r.size).toFixed(1) : '0'}%`])));
  return lines.join('\n');
}

async function get(a: CommandArgs['get']): Promise<void> {
  const g = a.globals;
  await withDaemon(g, async (c) => {
    const outPath = a.out ? path.resolve(a.out) : undefined;
    let overwrite = a.overwrite;
    if (overwrite === undefined && process.stdin.isTTY && process.stderr.isTTY) {
      const r = await c.call('resolve', { key: a.key, out: outPath });
      if (r.exists && !r.sameFile) {
        if (!(await confirm(`${r.target} exists. Overwrite it?`))) throw new P2PError('P2P_EXISTS', `${r.target} exists; not overwritten`);
        overwrite = true;
      }
    }
    const showBar = a.progress && process.stderr.isTTY && !g.json;
    const cliProgress = showBar ? (await import('cli-progress')).default : undefined;
    const bar = cliProgress
      ? new cliProgress.SingleBar(
          { format: ' {bar} {percentage}% | {done}/{size} | {rate} | ETA {eta_formatted} | {peers} peers', stream: process.stderr, hideCursor: true, etaBuffer: 50 },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
    try {
      const result = await c.call('get', { key: a.key, out: outPath, overwrite: overwrite ?? false, maxPeers: a.maxPeers, strategy: a.strategy }, (ev) => {
        if (!bar) return;
        const total = Number(ev.total) || 1;
        const payload = { done: formatBytes(Number(ev.bytes)), size: formatBytes(total), rate: formatRate(Number(ev.rateBytesPerSec)), peers: ev.peers };
        if (ev.type === 'started') bar.start(total, Number(ev.bytes), payload);
        else bar.update(Number(ev.bytes), payload);
      });
      if (!result.alreadyPresent) bar?.update(result.size, { done: formatBytes(result.size), size: formatBytes(result.size), rate: formatRate(result.size / Math.max(result.seconds, 0.001)), peers: result.peers.length });
      bar?.stop();
      out(g, result, () => printGet(result));
    } catch (err) {
      bar?.stop();
      throw err;
    }
  });
}

function readToken(file: string): string {
  let token: string;
  try {
    token = fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new P2PError('P2P_BAD_PATH', `cannot read --token-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (!token) throw new P2PError('P2P_BAD_PATH', `--token-file ${file} is empty`);
  return token;
}

async function admin(a: AdminArgs, fn: (c: AdminClient) => Promise<void>): Promise<void> {
  const token = readToken(a.tokenFile);
  const { AdminClient } = await import('./admin.js');
  const c = await AdminClient.connect(a.tracker, token);
  try {
    await fn(c);
  } finally {
    c.close();
  }
}

const COMMANDS: { [C in CommandName]: (a: CommandArgs[C]) => Promise<void> } = {
  async status({ globals: g }) {
    const s = await withDaemon(g, (c) => c.call('status', {}));
    out(g, s, () =>
      [
        `peer id   ${s.peerId}`,
        `listen    ${s.listen}${s.advertise ? ` (advertised as ${s.advertise})` : ''}`,
        `tracker   ${s.tracker.address ?? 'none'} (${s.tracker.role}, ${s.tracker.state}, term ${s.tracker.term})${s.tracker.standby ? `, standby ${s.tracker.standby}` : ''}`,
        `shared    ${s.shared} files`,
        `uploads   ${s.uploads} in progress, ${formatBytes(s.bytesSent)} sent`,
        `rates     up ${formatRate(s.rates.uploadBytesPerSec)}${s.limits.maxUploadRate ? ` (limit ${formatRate(s.limits.maxUploadRate)})` : ''}, down ${formatRate(s.rates.downloadBytesPerSec)}${s.limits.maxDownloadRate ? ` (limit ${formatRate(s.limits.maxDownloadRate)})` : ''}`,
        ...s.transfers.map((t) => `download  ${t.name}: ${formatBytes(t.bytes)} of ${formatBytes(t.total)} from ${t.peers} peers at ${formatRate(t.rateBytesPerSec)}`),
      ].join('\n'),
    );
  },

  async files({ globals: g }) {
    const files = await withDaemon(g, (c) => c.call('files', {}));
    out(g, files, () => (files.length ? table(['name', 'size', 'id', 'path'], files.map((f) => [f.name, formatBytes(f.size), f.id, f.path])) : 'no files shared'));
  },

  async share({ globals: g, paths }) {
    const resolved = paths.map((p) => path.resolve(p));
    const files = await withDaemon(g, (c) => c.call('share', { paths: resolved }));
    out(g, files, () => files.map((f) => `sharing ${f.name} (${formatBytes(f.size)}) id ${f.id}`).join('\n'));
  },

  async unshare({ globals: g, key }) {
    const files = await withDaemon(g, (c) => c.call('unshare', { key }));
    out(g, files, () => files.map((f) => `no longer sharing ${f.name} (${f.path})`).join('\n'));
  },

  async search({ globals: g, text, limit }) {
    const { hits, truncated } = await withDaemon(g, (c) => searchResult(c, text, limit));
    out(g, hits, () => (hits.length ? table(['name', 'size', 'peers', 'id'], hits.map((h) => [h.name, formatBytes(h.size), h.peers, h.id])) : 'no matching files'));
    // On stderr, so that --json's document stays the list: a script learns of it without parsing it.
    if (truncated) process.stderr.write(searchCutNote(hits.length, truncated, limit));
  },

  get,

  async transfers({ globals: g }) {
    const ts = await withDaemon(g, (c) => c.call('transfers', {}));
    out(g, ts, () =>
      ts.length
        ? ts
            .map((t) => `${new Date(t.time).toISOString()}  ${t.name}  ${formatBytes(t.size)} in ${t.seconds.toFixed(2)} s  -> ${t.path}\n` + t.peers.map((p) => `    ${p.id.slice(0, 16)}  ${p.address}  ${formatBytes(p.bytes)}  ${p.chunks} chunks`).join('\n'))
            .join('\n')
        : 'no downloads yet',
    );
  },

  async report({ globals: g, key, reason }) {
    const r = await withDaemon(g, (c) => c.call('report', { key, reason }));
    out(g, r, () => [...r.blacklisted.map((t) => `blacklisted ${t}`), ...r.pending.map((t) => `reported ${t} (pending the tracker's policy)`)].join('\n'));
  },

  'admin status': (a) =>
    admin(a, async (c) => {
      const { trackers } = await c.status();
      out(a.globals, trackers, () => table(['address', 'role', 'term', 'reachable', 'seq', 'behind'], trackers.map((t) => [t.address, t.role, t.term, t.reachable ? 'yes' : 'no', t.seq, t.behind])));
    }),

  'admin reports': (a) =>
    admin(a, async (c) => {
      const { reports } = await c.reports();
      const shaped = reports.map((r) => ({
        reporter: r.reporter,
        fileId: r.fileId.toString('hex'),
        reason: r.reason,
        targets: r.targets ? r.targets.split(',') : [],
        evidence: r.evidence === 1 ? 'bad-data' : 'user',
        time: new Date(r.time).toISOString(),
        status: r.status,
      }));
      out(a.globals, shaped, () => (shaped.length ? table(['time', 'reporter', 'evidence', 'status', 'targets', 'reason'], shaped.map((r) => [r.time, r.reporter.slice(0, 16), r.evidence, r.status, r.targets.map((t) => t.slice(0, 16)).join(','), r.reason])) : 'no reports'));
    }),

  'admin blacklist ls': (a) =>
    admin(a, async (c) => {
      const { entries } = await c.blacklist();
      const shaped = entries.map((e) => ({ target: e.target, reason: e.reason, since: new Date(e.since).toISOString(), addedBy: e.addedBy }));
      out(a.globals, shaped, () => (shaped.length ? table(['target', 'since', 'by', 'reason'], shaped.map((e) => [e.target, e.since, e.addedBy, e.reason])) : 'the blacklist is empty'));
    }),

  'admin blacklist add': (a) =>
    admin(a, async (c) => {
      await c.add(a.target, a.reason);
      out(a.globals, { target: a.target, added: true }, () => `blacklisted ${a.target}`);
    }),

  'admin blacklist rm': (a) =>
    admin(a, async (c) => {
      await c.remove(a.target);
      out(a.globals, { target: a.target, removed: true }, () => `removed ${a.target} from the blacklist`);
    }),
};

/** Runs one command; a failure is thrown as it came (the caller maps it to a message and an exit code). */
export function execute(invocation: Invocation): Promise<void> {
  // TypeScript cannot correlate the handler's type with the invocation's; the table's type guarantees it.
  const handler = COMMANDS[invocation.command] as (a: Invocation) => Promise<void>;
  return handler(invocation);
}
