/**
 * Issue 11: installable as a package. `npm pack` of this checkout, then `npm install -g` of the tarball
 * into a temporary prefix, gives `p2p`, `p2p-peerd` and `p2p-tracker` on that prefix's bin, and they run
 * a download between two installed peer daemons.
 *
 * In a real install, better-sqlite3's install script compiles its native addon (about a minute on two
 * cores). Here the install runs with --ignore-scripts and the addon is copied from this checkout's own
 * build (the same Node on the same machine), so the test checks what is the package's own: the files it
 * ships, its bin links and its dependencies. A full install by hand is in README.md, "Operating a fleet".
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { until } from '../helpers/wait.js';
import { ROOT, run, start, tempDir, VERSION, type Result } from '../helpers/programs.js';

const exec = promisify(execFile);
const ADDON = path.join('node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node');

t.test('npm pack, then npm install -g of the tarball: the installed programs run a download', async (t) => {
  const dir = tempDir(t, 'p2p-install-');
  // The build is already there (npm test builds first): packing must not build again.
  const { stdout } = await exec('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT });
  const [packed] = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const shipped = packed!.files.map((f) => f.path);
  t.ok(shipped.includes('dist/peerd/main.js') && shipped.includes('dist/daemon/main.js') && shipped.includes('dist/cli/p2p.cjs'), 'the tarball holds the three programs (p2p as its one-file bundle)');
  t.notOk(shipped.includes('dist/cli/bundle.js'), 'but not the build step that makes that bundle');
  t.ok(shipped.some((f) => f.startsWith('ops/systemd/')), 'and the service files');
  t.same(shipped.filter((f) => /^(dist\/)?(test|bench)\//.test(f) || f.endsWith('.ts')), [], 'but no tests, benchmarks or TypeScript sources');

  const prefix = path.join(dir, 'prefix');
  await exec('npm', ['install', '--global', '--prefix', prefix, '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', path.join(dir, packed!.filename)], { cwd: dir });
  const installed = path.join(prefix, 'lib', 'node_modules', 'p2pshare');
  fs.mkdirSync(path.dirname(path.join(installed, ADDON)), { recursive: true });
  fs.copyFileSync(path.join(ROOT, ADDON), path.join(installed, ADDON));
  const bin = path.join(prefix, 'bin');
  for (const program of ['p2p', 'p2p-peerd', 'p2p-tracker']) t.ok(fs.existsSync(path.join(bin, program)), `${program} is on the prefix's bin`);
  t.equal((await run('p2p', ['--version'], {}, 15_000, { bin })).stdout.trim(), VERSION, 'p2p --version prints the package version');

  const tracker = start(t, 'p2p-tracker', ['--listen', '127.0.0.1:0', '--data', path.join(dir, 'tracker')], { bin });
  const trackerAddress = String((await tracker.logged('tracker listening')).listen);
  const peer = (name: string): { socket: string; share: string; ready: Promise<unknown> } => {
    const share = path.join(dir, name, 'share');
    fs.mkdirSync(share, { recursive: true });
    const daemon = start(t, 'p2p-peerd', ['--trackers', trackerAddress, '--share', share, '--data', path.join(dir, name, 'data'), '--listen', '127.0.0.1:0'], { bin });
    return { socket: path.join(dir, name, 'data', 'peerd.sock'), share, ready: daemon.logged('peer daemon ready') };
  };
  const seeder = peer('seeder');
  const downloader = peer('downloader');
  await Promise.all([seeder.ready, downloader.ready]);
  const p2p = (who: { socket: string }, ...args: string[]): Promise<Result> => run('p2p', ['--socket', who.socket, ...args], {}, 15_000, { bin });

  const content = Buffer.alloc(2 * 1024 * 1024 + 99, 'installed ');
  fs.writeFileSync(path.join(seeder.share, 'manual.pdf'), content);
  await until('manual.pdf in search', async () => ((await p2p(downloader, 'search', 'manual', '--json')).stdout.includes('manual.pdf') ? true : undefined));
  const out = path.join(dir, 'got.pdf');
  const got = await p2p(downloader, 'get', 'manual.pdf', '--out', out, '--no-progress');
  t.equal(got.code, 0, `p2p get exits 0 (${got.stderr.trim()})`);
  t.ok(fs.readFileSync(out).equals(content), 'and the file arrived intact');
});
