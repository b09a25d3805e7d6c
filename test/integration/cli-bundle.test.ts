/**
 * `p2p` as installed is one CommonJS file that esbuild makes from the modules tsc writes (dist/cli/p2p.cjs,
 * cli/bundle.ts; issue 8, start-up time). The rest of the suite runs dist/cli/main.js, whose coverage maps
 * back to the sources; this test runs the same command lines through both and expects the same answers:
 * the fast path, yargs (outside the bundle, loaded from node_modules), usage errors, a missing daemon,
 * and a real peer daemon's status, share, files and search.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ROOT, run, start, tempDir, VERSION, type Result } from '../helpers/programs.js';

t.test('the one-file p2p answers every command line as the modules do', async (t) => {
  const dir = tempDir(t);
  const bundled = path.join(dir, 'bin');
  fs.mkdirSync(bundled);
  fs.symlinkSync(path.join(ROOT, 'dist', 'cli', 'p2p.cjs'), path.join(bundled, 'p2p'));
  const modules = path.join(dir, 'modules-bin');
  fs.mkdirSync(modules);
  fs.symlinkSync(path.join(ROOT, 'dist', 'cli', 'main.js'), path.join(modules, 'p2p'));

  const tracker = start(t, 'p2p-tracker', ['--listen', '127.0.0.1:0', '--data', path.join(dir, 'tracker')]);
  const trackerAddress = String((await tracker.logged('tracker listening')).listen);
  const share = path.join(dir, 'share');
  fs.mkdirSync(share);
  fs.writeFileSync(path.join(share, 'notes.txt'), 'some bytes to share\n');
  const socket = path.join(dir, 'data', 'peerd.sock');
  const peerd = start(t, 'p2p-peerd', ['--trackers', trackerAddress, '--share', share, '--data', path.join(dir, 'data'), '--listen', '127.0.0.1:0']);
  await peerd.logged('peer daemon ready');

  // (The bundle is left out of the coverage report, package.json's tap.coverage-exclude: the modules' run
  // of the same command lines is what it counts.)
  // One process at a time: the suite runs test files side by side, some of them timing a tracker.
  const both = async (args: string[]): Promise<[Result, Result]> => [await run('p2p', args, {}, 15_000, { bin: bundled }), await run('p2p', args, {}, 15_000, { bin: modules })];
  const cases: Array<[string, string[]]> = [
    ['--version', ['--version']],
    ['--help (yargs)', ['--help']],
    ['a command yargs parses', ['status', '--json', '--socket', socket, '--no-such-flag']],
    ['no command', []],
    ['a daemon that is not there', ['--socket', path.join(dir, 'nobody.sock'), 'status']],
    ['status', ['--socket', socket, 'status', '--json']],
    ['files', ['--socket', socket, 'files', '--json']],
    ['search', ['--socket', socket, 'search', 'notes', '--json']],
    ['get of a name nobody has', ['--socket', socket, 'get', 'no-such-file.bin', '--no-progress']],
  ];
  for (const [what, args] of cases) {
    const [one, many] = await both(args);
    t.equal(one.code, many.code, `${what}: the same exit code (${many.code})`);
    // status reports uptime and counters that move between the two calls: compare its fields, not values.
    if (what === 'status') t.same(Object.keys(JSON.parse(one.stdout) as object).sort(), Object.keys(JSON.parse(many.stdout) as object).sort(), `${what}: the same fields`);
    else t.equal(one.stdout, many.stdout, `${what}: the same output`);
    t.equal(one.stderr, many.stderr, `${what}: the same message on stderr`);
  }
  // yargs is an ES module only; before Node 20.19 a CommonJS require of it fails. The bundle imports the
  // full parser the way every Node 20 can (this flag turns that require support off, as it was).
  const older = await run('p2p', ['bogus-command'], { NODE_OPTIONS: '--no-experimental-require-module' }, 15_000, { bin: bundled });
  t.equal(older.code, 2, `without require() of ES modules, a usage error still exits 2 (${older.stderr.trim()})`);
  t.match(older.stderr, /Unknown argument: bogus-command/, 'with the usage message');
  const [version] = await both(['--version']);
  t.equal(version.stdout.trim(), VERSION, 'the bundle finds package.json for its version');
});
