/**
 * Issue 11: a rolling upgrade a fleet can survive. The previous release (the git tag named in
 * PREVIOUS_RELEASE) is built from this repository's history into a temporary folder; then a cluster of
 * three trackers and three peer daemons of that release is upgraded to this checkout's build one daemon
 * at a time: the trackers from the last backup to the main, then the peers. After every step the
 * cluster has one main and every tracker reachable, a new file goes from two seeders to a downloader
 * intact (old and new daemons together), and a ban made before the upgrade is still there.
 *
 * Not part of `npm test`: it builds a second tree (tsc) and needs the git history (the tag, or the commit
 * it names), which a shallow CI checkout may lack. Run it with `npm run test:upgrade` before a release.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ROOT, run, start, tempDir, type Daemon, type ProgramOptions, type Result } from '../helpers/programs.js';
import { reservePorts, until } from '../helpers/wait.js';

const PREVIOUS_RELEASE = 'v0.1.0';
/**
 * The commit that tag names, for a clone that has the history but not the tags (`git clone` of a
 * mirror that never fetched them): every `git describe` in bench/results counts from it.
 */
const PREVIOUS_RELEASE_COMMIT = '59f22902b666b34fbc1a533c08af4b0cb9ca96e5';
const TOKEN = 'rolling-upgrade-admin-token';

/** The tree to build: the tag where this clone has it, else the commit it names. */
function previousRef(): string {
  try {
    execFileSync('git', ['-C', ROOT, 'rev-parse', '--verify', '--quiet', `${PREVIOUS_RELEASE}^{commit}`], { stdio: 'ignore' });
    return PREVIOUS_RELEASE;
  } catch {
    return PREVIOUS_RELEASE_COMMIT;
  }
}

/** The previous release, built from git into `dir`; returns a bin folder of links to its programs. */
function buildPrevious(dir: string): string {
  const tree = path.join(dir, PREVIOUS_RELEASE);
  fs.mkdirSync(tree);
  const archive = execFileSync('git', ['-C', ROOT, 'archive', '--format=tar', previousRef()], { maxBuffer: 256 * 1024 * 1024 });
  execFileSync('tar', ['-x', '-C', tree], { input: archive });
  // Its dependencies are a subset of ours at the same versions (package-lock.json of both).
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(tree, 'node_modules'));
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(tree, 'tsconfig.json')], { stdio: 'inherit' });
  const bin = path.join(dir, 'previous-bin');
  fs.mkdirSync(bin);
  for (const [program, script] of [['p2p', 'dist/cli/main.js'], ['p2p-tracker', 'dist/daemon/main.js'], ['p2p-peerd', 'dist/peerd/main.js']]) {
    fs.symlinkSync(path.join(tree, script!), path.join(bin, program!));
  }
  return bin;
}

interface Node {
  name: string;
  args: string[];
  daemon: Daemon;
  release: 'previous' | 'new';
}

t.test(`a rolling upgrade from ${PREVIOUS_RELEASE} to this build, one daemon at a time`, { timeout: 600_000 }, async (t) => {
  const dir = tempDir(t, 'p2p-upgrade-');
  const previousBin = buildPrevious(dir);
  const binOf = (release: Node['release']): ProgramOptions => (release === 'previous' ? { bin: previousBin } : {});
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });

  const ports = await reservePorts(3);
  const cluster = ports.map((p) => `127.0.0.1:${p}`).join(',');
  const trackers: Node[] = ports.map((port, rank) => {
    const args = ['--listen', `127.0.0.1:${port}`, '--cluster', cluster, '--data', path.join(dir, `tracker${rank}`), '--admin-token-file', tokenFile];
    return { name: `tracker${rank}`, args, daemon: start(t, 'p2p-tracker', args, { bin: previousBin }), release: 'previous' };
  });
  const peers: Node[] = ['seeder1', 'seeder2', 'downloader'].map((name) => {
    fs.mkdirSync(path.join(dir, name, 'share'), { recursive: true });
    const args = ['--trackers', cluster, '--share', path.join(dir, name, 'share'), '--data', path.join(dir, name, 'data'), '--listen', '127.0.0.1:0'];
    return { name, args, daemon: start(t, 'p2p-peerd', args, { bin: previousBin }), release: 'previous' };
  });
  await Promise.all(peers.map((p) => p.daemon.logged('peer daemon ready')));
  const socketOf = (p: Node): string => path.join(dir, p.name, 'data', 'peerd.sock');
  const p2p = (p: Node, ...args: string[]): Promise<Result> => run('p2p', ['--socket', socketOf(p), ...args], {}, 30_000, binOf(p.release));
  const admin = (...args: string[]): Promise<Result> => run('p2p', ['admin', '--tracker', cluster.split(',')[0]!, '--token-file', tokenFile, ...args, '--json']);

  /** One main and every tracker reachable, as the admin command of this build sees the cluster. */
  const settled = (what: string): Promise<unknown> =>
    until(`${what}: one main, every tracker reachable`, async () => {
      const r = await admin('status');
      if (r.code !== 0) return undefined;
      const rows = JSON.parse(r.stdout) as Array<{ role: string; reachable: boolean }>;
      return rows.length === 3 && rows.every((row) => row.reachable) && rows.filter((row) => row.role === 'primary').length === 1 ? rows : undefined;
    }, 30_000, 100);

  let step = 0;
  /** A new file on both seeders arrives intact at the downloader, whatever each daemon's release. */
  const downloadWorks = async (what: string): Promise<void> => {
    step++;
    const name = `step-${step}.bin`;
    const content = Buffer.alloc(1024 * 1024 + 4321 * step, `${what} `);
    for (const seeder of peers.slice(0, 2)) {
      fs.writeFileSync(path.join(dir, seeder.name, 'share', name), content);
      const shared = await p2p(seeder, 'share', path.join(dir, seeder.name, 'share', name));
      if (shared.code !== 0) throw new Error(`${seeder.name}: share failed: ${shared.stderr}`);
    }
    const downloader = peers[2]!;
    await until(`${name} on both seeders`, async () => {
      const hits = JSON.parse((await p2p(downloader, 'search', name, '--json')).stdout || '[]') as Array<{ name: string; peers: number }>;
      return hits.some((h) => h.name === name && h.peers === 2) || undefined;
    }, 30_000);
    const out = path.join(dir, `got-${name}`);
    const got = await p2p(downloader, 'get', name, '--out', out, '--no-progress');
    t.equal(got.code, 0, `${what}: the download succeeds (${got.stderr.trim()})`);
    t.ok(fs.existsSync(out) && fs.readFileSync(out).equals(content), `${what}: and is intact`);
  };

  /** Stops a daemon of the previous release and starts this build on the same flags and --data. */
  const upgrade = async (node: Node, program: 'p2p-tracker' | 'p2p-peerd'): Promise<void> => {
    node.daemon.child.kill('SIGTERM');
    const { code } = await node.daemon.exited;
    t.equal(code, 0, `${node.name} (previous release) stops cleanly`);
    node.daemon = start(t, program, node.args);
    node.release = 'new';
    await node.daemon.logged(program === 'p2p-tracker' ? 'tracker listening' : 'peer daemon ready');
  };

  await settled('all on the previous release');
  t.equal((await admin('blacklist', 'add', '10.9.9.9', '--reason', 'made before the upgrade')).code, 0, 'a ban is made before the upgrade');
  // This build's CLI reads the list in pages; the previous release's tracker knows only the whole list.
  const before = await admin('blacklist', 'ls');
  t.equal(before.code, 0, "this build's `admin blacklist ls` works against the previous release's tracker");
  t.match(JSON.parse(before.stdout), [{ target: '10.9.9.9', reason: 'made before the upgrade' }], 'and lists its ban');
  t.equal((await admin('reports')).code, 0, "so does `admin reports`");
  await downloadWorks('all on the previous release');

  for (const tracker of [...trackers].reverse()) {
    await upgrade(tracker, 'p2p-tracker');
    await settled(`${tracker.name} upgraded`);
    await downloadWorks(`${tracker.name} upgraded`);
  }
  // This build's CLI against a previous release's peer daemon, which has no `searchResult` and ignores --limit.
  const newCli = (...args: string[]): Promise<Result> => run('p2p', ['--socket', socketOf(peers[2]!), ...args], {}, 30_000, {});
  const every = await newCli('search', 'step-', '--json');
  const everyHits = JSON.parse(every.stdout || '[]') as Array<{ name: string }>;
  t.equal(every.code, 0, "this build's `p2p search` works against the previous release's peer daemon");
  t.ok(everyHits.length >= 2, `and lists its ${everyHits.length} matches`);
  const one = await newCli('search', 'step-', '--limit', '1', '--json');
  t.equal((JSON.parse(one.stdout || '[]') as unknown[]).length, 1, 'with --limit 1 it lists one');
  t.match(one.stderr, /more files match/, 'and says that more match');
  for (const peer of peers) {
    await upgrade(peer, 'p2p-peerd');
    await downloadWorks(`${peer.name} upgraded`);
  }

  const rows = (await settled('all upgraded')) as Array<{ address: string; role: string }>;
  t.equal(rows.find((r) => r.role === 'primary')?.address, cluster.split(',')[0], 'the first tracker is the main again');
  const bans = JSON.parse((await admin('blacklist', 'ls')).stdout) as Array<{ target: string }>;
  t.ok(bans.some((b) => b.target === '10.9.9.9'), 'the ban made before the upgrade is still in force');
  const migrated = trackers[0]!.daemon.logs.find((l) => l.msg === 'database schema migrated');
  t.match(migrated, { from: 0, to: 1 }, "the main's database was migrated from the previous release's (no version) to version 1");
});
