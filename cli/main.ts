#!/usr/bin/env node
/**
 * p2p: the command line. Parses arguments, talks to the local p2p-peerd over its Unix socket (or to a
 * tracker for `admin`), prints. Exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 refused.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline/promises';
import cliProgress from 'cli-progress';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { P2PError, toP2PError } from '../protocol/index.js';
import { packageVersion, usageError } from '../protocol/program.js';
import { ControlClient, type DownloadResult } from '../peerd/index.js';
import { AdminClient } from './admin.js';
import { formatBytes, formatRate, table } from './format.js';

const PROGRAM = 'p2p';

export const EXIT = { ok: 0, failed: 1, usage: 2, notFound: 3, refused: 4 } as const;

export function exitCodeFor(code: string): number {
  if (code === 'P2P_NOT_FOUND') return EXIT.notFound;
  if (code === 'P2P_BLACKLISTED' || code === 'P2P_UNAUTHORIZED') return EXIT.refused;
  return EXIT.failed;
}

interface Globals {
  socket?: string;
  json: boolean;
}

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

async function withDaemon<T>(g: Globals, fn: (c: ControlClient) => Promise<T>): Promise<T> {
  const c = await ControlClient.connect(g.socket ?? defaultSocket());
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

async function confirm(question: string): Promise<boolean> {
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question} [y/N] `);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

function printGet(r: DownloadResult): string {
  const lines = [`${r.name}: ${formatBytes(r.size)} in ${r.seconds.toFixed(2)} s (${formatRate(r.size / Math.max(r.seconds, 0.001))}) -> ${r.path}`, `id ${r.id}`];
  if (r.resumedChunks > 0) lines.push(`resumed: ${r.resumedChunks} chunks were already verified on disk`);
  lines.push(table(['peer', 'address', 'bytes', 'chunks', 'share'], r.peers.map((p) => [p.id.slice(0, 16), p.address, formatBytes(p.bytes), p.chunks, `${r.size ? ((100 * p.bytes) / r.size).toFixed(1) : '0'}%`])));
  return lines.join('\n');
}

async function get(g: Globals, a: { key: string; out?: string; overwrite?: boolean; maxPeers?: number; progress: boolean; strategy?: 'adaptive' | 'original' }): Promise<void> {
  await withDaemon(g, async (c) => {
    const outPath = a.out ? path.resolve(a.out) : undefined;
    let overwrite = a.overwrite;
    if (overwrite === undefined && process.stdin.isTTY && process.stderr.isTTY) {
      const r = await c.call('resolve', { key: a.key, out: outPath });
      if (r.exists) {
        if (!(await confirm(`${r.target} exists. Overwrite it?`))) throw new P2PError('P2P_EXISTS', `${r.target} exists; not overwritten`);
        overwrite = true;
      }
    }
    const showBar = a.progress && process.stderr.isTTY && !g.json;
    const bar = showBar
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
      bar?.update(result.size, { done: formatBytes(result.size), size: formatBytes(result.size), rate: formatRate(result.size / Math.max(result.seconds, 0.001)), peers: result.peers.length });
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
    throw new P2PError('P2P_BAD_REQUEST', `cannot read --token-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (!token) throw new P2PError('P2P_BAD_REQUEST', `--token-file ${file} is empty`);
  return token;
}

async function admin(g: Globals, a: { tracker: string; tokenFile: string }, fn: (c: AdminClient) => Promise<void>): Promise<void> {
  const token = readToken(a.tokenFile);
  const c = await AdminClient.connect(a.tracker, token);
  try {
    await fn(c);
  } finally {
    c.close();
  }
  void g;
}

let pending: Promise<void> | undefined;
const run = (p: Promise<void>): void => {
  pending = p;
};

const globals = (argv: Record<string, unknown>): Globals => ({ socket: argv.socket as string | undefined, json: argv.json === true });

const cli = yargs(hideBin(process.argv))
  .scriptName(PROGRAM)
  .usage('$0 <command> [options]\n\nThe p2pshare command line; talks to the local p2p-peerd.')
  .option('socket', { type: 'string', global: true, describe: 'the p2p-peerd control socket (env P2P_SOCKET; default ~/.p2pshare/peerd.sock)' })
  .option('json', { type: 'boolean', global: true, default: false, describe: 'one JSON document on stdout' })
  .command('status', "this peer's id, addresses, tracker, files shared and transfers", {}, (argv) =>
    run(
      (async () => {
        const g = globals(argv);
        const s = await withDaemon(g, (c) => c.call('status', {}));
        out(g, s, () =>
          [
            `peer id   ${s.peerId}`,
            `listen    ${s.listen}${s.advertise ? ` (advertised as ${s.advertise})` : ''}`,
            `tracker   ${s.tracker.address ?? 'none'} (${s.tracker.role}, ${s.tracker.state}, term ${s.tracker.term})`,
            `shared    ${s.shared} files`,
            `uploads   ${s.uploads} in progress, ${formatBytes(s.bytesSent)} sent`,
            `rates     up ${formatRate(s.rates.uploadBytesPerSec)}${s.limits.maxUploadRate ? ` (limit ${formatRate(s.limits.maxUploadRate)})` : ''}, down ${formatRate(s.rates.downloadBytesPerSec)}${s.limits.maxDownloadRate ? ` (limit ${formatRate(s.limits.maxDownloadRate)})` : ''}`,
            ...s.transfers.map((t) => `download  ${t.name}: ${formatBytes(t.bytes)} of ${formatBytes(t.total)} from ${t.peers} peers at ${formatRate(t.rateBytesPerSec)}`),
          ].join('\n'),
        );
      })(),
    ),
  )
  .command('files', 'the files this peer shares', {}, (argv) =>
    run(
      (async () => {
        const g = globals(argv);
        const files = await withDaemon(g, (c) => c.call('files', {}));
        out(g, files, () => (files.length ? table(['name', 'size', 'id', 'path'], files.map((f) => [f.name, formatBytes(f.size), f.id, f.path])) : 'no files shared'));
      })(),
    ),
  )
  .command('share <paths..>', 'share more files, in place', (y: Argv) => y.positional('paths', { type: 'string', array: true, demandOption: true }), (argv) =>
    run(
      (async () => {
        const g = globals(argv);
        const paths = (argv.paths as string[]).map((p) => path.resolve(p));
        const files = await withDaemon(g, (c) => c.call('share', { paths }));
        out(g, files, () => files.map((f) => `sharing ${f.name} (${formatBytes(f.size)}) id ${f.id}`).join('\n'));
      })(),
    ),
  )
  .command('unshare <key>', 'stop sharing a file (NAME or ID)', (y: Argv) => y.positional('key', { type: 'string', demandOption: true }), (argv) =>
    run(
      (async () => {
        const g = globals(argv);
        const files = await withDaemon(g, (c) => c.call('unshare', { key: String(argv.key) }));
        out(g, files, () => files.map((f) => `no longer sharing ${f.name} (${f.path})`).join('\n'));
      })(),
    ),
  )
  .command('search [text]', "the network's files whose name contains TEXT", (y: Argv) => y.positional('text', { type: 'string' }), (argv) =>
    run(
      (async () => {
        const g = globals(argv);
        const hits = await withDaemon(g, (c) => c.call('search', { text: argv.text === undefined ? '' : String(argv.text) }));
        out(g, hits, () => (hits.length ? table(['name', 'size', 'peers', 'id'], hits.map((h) => [h.name, formatBytes(h.size), h.peers, h.id])) : 'no matching files'));
      })(),
    ),
  )
  .command(
    'get <key>',
    'download a file (NAME or ID) from several peers at once',
    (y: Argv) =>
      y
        .positional('key', { type: 'string', demandOption: true })
        .option('out', { type: 'string', describe: 'where to save it (a file or a folder)' })
        .option('overwrite', { type: 'boolean', describe: 'replace an existing file (--no-overwrite: never)' })
        .option('max-peers', { type: 'number', describe: 'use at most K peers' })
        .option('strategy', { type: 'string', choices: ['adaptive', 'original'], describe: "peer choice (default: the daemon's)" })
        .option('progress', { type: 'boolean', default: true, describe: 'show a progress bar on a terminal (--no-progress to hide)' }),
    (argv) => {
      const maxPeers = argv['max-peers'] as number | undefined;
      if (maxPeers !== undefined && (!Number.isInteger(maxPeers) || maxPeers < 1)) usageError(PROGRAM, '--max-peers must be a positive integer');
      run(get(globals(argv), { key: String(argv.key), out: argv.out as string | undefined, overwrite: argv.overwrite as boolean | undefined, maxPeers, progress: argv.progress !== false, strategy: argv.strategy as 'adaptive' | 'original' | undefined }));
    },
  )
  .command('transfers', 'recent downloads', {}, (argv) =>
    run(
      (async () => {
        const g = globals(argv);
        const ts = await withDaemon(g, (c) => c.call('transfers', {}));
        out(g, ts, () =>
          ts.length
            ? ts
                .map((t) => `${new Date(t.time).toISOString()}  ${t.name}  ${formatBytes(t.size)} in ${t.seconds.toFixed(2)} s  -> ${t.path}\n` + t.peers.map((p) => `    ${p.id.slice(0, 16)}  ${p.address}  ${formatBytes(p.bytes)}  ${p.chunks} chunks`).join('\n'))
                .join('\n')
            : 'no downloads yet',
        );
      })(),
    ),
  )
  .command(
    'report <key>',
    "report this peer's last download of a file: its senders go before the tracker's report policy",
    (y: Argv) => y.positional('key', { type: 'string', demandOption: true }).option('reason', { type: 'string', default: '', describe: 'why' }),
    (argv) =>
      run(
        (async () => {
          const g = globals(argv);
          const r = await withDaemon(g, (c) => c.call('report', { key: String(argv.key), reason: String(argv.reason ?? '') }));
          out(g, r, () => [...r.blacklisted.map((t) => `blacklisted ${t}`), ...r.pending.map((t) => `reported ${t} (pending the tracker's policy)`)].join('\n'));
        })(),
      ),
  )
  .command('admin', 'administer the trackers (needs --tracker and --token-file)', (y: Argv) =>
    y
      .option('tracker', { type: 'string', demandOption: true, describe: 'a tracker HOST:PORT' })
      .option('token-file', { type: 'string', demandOption: true, describe: 'file holding the admin token' })
      .command('status', "every tracker's address, role, term and replication state", {}, (argv) =>
        run(
          admin(globals(argv), { tracker: String(argv.tracker), tokenFile: String(argv['token-file']) }, async (c) => {
            const g = globals(argv);
            const { trackers } = await c.status();
            out(g, trackers, () => table(['address', 'role', 'term', 'reachable', 'seq', 'behind'], trackers.map((t) => [t.address, t.role, t.term, t.reachable ? 'yes' : 'no', t.seq, t.behind])));
          }),
        ),
      )
      .command('reports', 'the reports received', {}, (argv) =>
        run(
          admin(globals(argv), { tracker: String(argv.tracker), tokenFile: String(argv['token-file']) }, async (c) => {
            const g = globals(argv);
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
            out(g, shaped, () => (shaped.length ? table(['time', 'reporter', 'evidence', 'status', 'targets', 'reason'], shaped.map((r) => [r.time, r.reporter.slice(0, 16), r.evidence, r.status, r.targets.map((t) => t.slice(0, 16)).join(','), r.reason])) : 'no reports'));
          }),
        ),
      )
      .command('blacklist', 'the blacklist: ls | add TARGET | rm TARGET', (yb: Argv) =>
        yb
          .command('ls', 'list the blacklist', {}, (argv) =>
            run(
              admin(globals(argv), { tracker: String(argv.tracker), tokenFile: String(argv['token-file']) }, async (c) => {
                const g = globals(argv);
                const { entries } = await c.blacklist();
                const shaped = entries.map((e) => ({ target: e.target, reason: e.reason, since: new Date(e.since).toISOString(), addedBy: e.addedBy }));
                out(g, shaped, () => (shaped.length ? table(['target', 'since', 'by', 'reason'], shaped.map((e) => [e.target, e.since, e.addedBy, e.reason])) : 'the blacklist is empty'));
              }),
            ),
          )
          .command('add <target>', 'ban a peer id or an IP address', (ya: Argv) => ya.positional('target', { type: 'string', demandOption: true }).option('reason', { type: 'string', default: '' }), (argv) =>
            run(
              admin(globals(argv), { tracker: String(argv.tracker), tokenFile: String(argv['token-file']) }, async (c) => {
                await c.add(String(argv.target), String(argv.reason ?? ''));
                out(globals(argv), { target: String(argv.target), added: true }, () => `blacklisted ${String(argv.target)}`);
              }),
            ),
          )
          .command('rm <target>', 'lift a ban', (ya: Argv) => ya.positional('target', { type: 'string', demandOption: true }), (argv) =>
            run(
              admin(globals(argv), { tracker: String(argv.tracker), tokenFile: String(argv['token-file']) }, async (c) => {
                await c.remove(String(argv.target));
                out(globals(argv), { target: String(argv.target), removed: true }, () => `removed ${String(argv.target)} from the blacklist`);
              }),
            ),
          )
          .demandCommand(1, 'blacklist needs ls, add TARGET or rm TARGET'),
      )
      .demandCommand(1, 'admin needs status, blacklist or reports'),
  )
  .demandCommand(1, 'a command is required')
  .strict()
  .version(packageVersion())
  .help()
  .fail((msg, err) => usageError(PROGRAM, msg ?? err?.message ?? 'bad arguments'));

try {
  await cli.parseAsync();
} catch (err) {
  usageError(PROGRAM, (err as Error).message);
}
if (pending) {
  try {
    await pending;
    process.exitCode = EXIT.ok;
  } catch (err) {
    const e = toP2PError(err);
    process.stderr.write(`${PROGRAM}: ${e.message}\n`);
    process.exitCode = exitCodeFor(e.code);
  }
}
