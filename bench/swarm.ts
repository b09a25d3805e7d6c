/**
 * A p2pshare network on loopback for the benchmarks: a tracker and p2p-peerd processes in a Workspace,
 * each peer with its own share and data folders, and waits that poll the real programs (`p2p status`,
 * `p2p search`) instead of sleeping.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { canConnect, freePort, GiveUp, p2p, p2pJson, PROGRAMS, until, type Started, type Workspace } from './harness.js';

export interface Peer {
  name: string;
  proc: Started;
  /** The control socket, for `p2p --socket`. */
  socket: string;
  share: string;
}

interface StatusResult {
  tracker: { state?: string; role: string };
  shared: number;
}

/** Starts a tracker on a free loopback port and waits until it accepts connections; returns HOST:PORT too. */
export async function startTracker(ws: Workspace): Promise<{ proc: Started; address: string }> {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const proc = ws.start('tracker', PROGRAMS.tracker, ['--listen', address, '--data', await ws.mkdir('tracker'), '--log-level', 'warn']);
  await until('the tracker to listen', async () => {
    if (proc.child.exitCode !== null) throw new GiveUp(`the tracker exited: ${ws.tail(proc)}`);
    return (await canConnect(port)) ? true : undefined;
  }, 60_000, 100);
  return { proc, address };
}

export interface PeerOptions {
  /** Files to hard-link into its share folder before it starts (no copy; they share the page cache). */
  files?: string[];
  /** Flags for node itself, before the script (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /** Run it under another program: `command ...commandArgs node-script args` (clinic, perf). */
  command?: string;
  commandArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** More p2p-peerd flags (e.g. --plain-chunk-links). */
  args?: string[];
}

/** Hard-links `file` into `dir` (already there: nothing to do). */
export async function linkInto(dir: string, file: string): Promise<void> {
  try {
    await fsp.link(file, path.join(dir, path.basename(file)));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

/** Starts a p2p-peerd listening on loopback; see waitReady. */
export async function startPeer(ws: Workspace, name: string, tracker: string, opts: PeerOptions = {}): Promise<Peer> {
  const share = await ws.mkdir(name, 'share');
  const data = await ws.mkdir(name, 'data');
  for (const f of opts.files ?? []) await linkInto(share, f);
  const socket = path.join(data, 'peerd.sock');
  const args = ['--trackers', tracker, '--share', share, '--data', data, '--listen', '127.0.0.1:0', '--log-level', 'warn', ...(opts.args ?? [])];
  const proc = ws.start(name, PROGRAMS.peerd, args, {
    ...(opts.command ? { command: opts.command, commandArgs: [...(opts.commandArgs ?? []), process.execPath, ...(opts.nodeArgs ?? [])] } : { commandArgs: opts.nodeArgs ?? [] }),
    ...(opts.env ? { env: opts.env } : {}),
  });
  return { name, proc, socket, share };
}

/** Waits until a peer answers `p2p status`, connected to the tracker and sharing at least `sharedAtLeast` files. */
export async function waitReady(ws: Workspace, peer: Peer, sharedAtLeast: number): Promise<void> {
  await until(
    `${peer.name} to connect and share ${sharedAtLeast} file(s)`,
    async () => {
      if (peer.proc.child.exitCode !== null) throw new GiveUp(`${peer.name} exited: ${ws.tail(peer.proc)}`);
      const r = await p2p(peer.socket, ['status'], 5000);
      if (r.code !== 0) return undefined;
      const s = JSON.parse(r.stdout) as StatusResult;
      return s.tracker.state === 'connected' && s.shared >= sharedAtLeast ? true : undefined;
    },
    // Hashing a 1 GiB file takes a few seconds per seeder, more when several hash at once on few cores.
    180_000,
    100,
  );
}

/** Waits until the tracker lists `holders` peers for the file, as `peer` sees it; returns the file id. */
export async function waitHolders(peer: Peer, name: string, holders: number): Promise<string> {
  return until(`the tracker to list ${holders} holder(s) of ${name}`, async () => {
    const { value } = await p2pJson<Array<{ name: string; id: string; peers: number }>>(peer.socket, ['search', name], 5000);
    const f = value.find((x) => x.name === name);
    return f && f.peers === holders ? f.id : undefined;
  }, 60_000, 100);
}

/** What `p2p get --json` prints (shared/INTERFACE.md). */
export interface GetResult {
  name: string;
  id: string;
  path: string;
  size: number;
  seconds: number;
  peers: Array<{ id: string; address: string; bytes: number; chunks: number }>;
}
