/**
 * `p2p`'s fast path (cli/fast-path.ts) recognises the common command lines without loading yargs (issue 8).
 * Whatever it accepts must mean exactly what yargs (cli/arguments.ts) makes of the same line, or a user
 * would see a command behave differently depending on how it was spelled; everything else it must leave
 * to yargs, which owns --help, the usage errors and every unusual spelling.
 */
import fc from 'fast-check';
import t from 'tap';
import { buildParser } from '../../cli/arguments.js';
import type { Invocation } from '../../cli/commands.js';
import { parseFast } from '../../cli/fast-path.js';

class UsageError extends Error {}

/** What yargs makes of a command line: the Invocation its handler produced, or the usage error it raised. */
async function viaYargs(args: string[]): Promise<Invocation | UsageError | undefined> {
  let invocation: Invocation | undefined;
  try {
    // Should yargs show its help for a line the fast path took, the comparison fails instead of exiting.
    await buildParser(args, (i) => (invocation = i), (message) => {
      throw new UsageError(message);
    })
      .exitProcess(false)
      .parseAsync();
  } catch (err) {
    if (err instanceof UsageError) return err;
    throw err;
  }
  return invocation;
}

const g = (json = false, socket?: string) => ({ socket, json });

t.test('the common command lines are recognised', async (t) => {
  const cases: Array<[string[], Invocation]> = [
    [['status'], { command: 'status', globals: g() }],
    [['status', '--json'], { command: 'status', globals: g(true) }],
    [['--json', 'status', '--socket', '/run/p.sock'], { command: 'status', globals: g(true, '/run/p.sock') }],
    [['--socket=/run/p.sock', 'files'], { command: 'files', globals: g(false, '/run/p.sock') }],
    [['transfers'], { command: 'transfers', globals: g() }],
    [['search'], { command: 'search', globals: g(), text: '' }],
    [['search', 'Report 2024.pdf'], { command: 'search', globals: g(), text: 'Report 2024.pdf' }],
    [['share', 'a', 'b/c', '--json'], { command: 'share', globals: g(true), paths: ['a', 'b/c'] }],
    [['unshare', 'a.txt'], { command: 'unshare', globals: g(), key: 'a.txt' }],
    [['report', 'a.txt'], { command: 'report', globals: g(), key: 'a.txt', reason: '' }],
    [['report', 'a.txt', '--reason', 'bad data'], { command: 'report', globals: g(), key: 'a.txt', reason: 'bad data' }],
    [['get', 'a.txt'], { command: 'get', globals: g(), key: 'a.txt', out: undefined, overwrite: undefined, maxPeers: undefined, progress: true, strategy: undefined }],
    [
      ['--socket', '/run/p.sock', 'get', 'film.bin', '--json', '--no-progress', '--overwrite', '--strategy', 'adaptive'],
      { command: 'get', globals: g(true, '/run/p.sock'), key: 'film.bin', out: undefined, overwrite: true, maxPeers: undefined, progress: false, strategy: 'adaptive' },
    ],
    [
      ['get', '--out=/tmp/x', 'film.bin', '--no-overwrite', '--max-peers', '4', '--strategy=original', '--progress'],
      { command: 'get', globals: g(), key: 'film.bin', out: '/tmp/x', overwrite: false, maxPeers: 4, progress: true, strategy: 'original' },
    ],
  ];
  for (const [args, expected] of cases) {
    t.same(parseFast(args), expected, `p2p ${args.join(' ')}`);
    t.same(await viaYargs(args), expected, `p2p ${args.join(' ')}: yargs agrees`);
  }
  t.equal(parseFast(['--version']), 'version', 'a lone --version');
});

t.test('everything else is left to yargs', (t) => {
  const cases: string[][] = [
    [],
    ['--help'],
    ['status', '--help'],
    ['status', '--version'],
    ['--json'],
    ['bogus'],
    ['status', 'extra'],
    ['status', '--bogus'],
    ['status', '--json', '--json'],
    ['status', '--json=false'],
    ['status', '--json', 'false'],
    ['status', '--no-json'],
    ['status', '--socket'],
    ['status', '--socket', ''],
    ['status', '--socket='],
    ['status', '--socket', '-x'],
    ['status', '--socket', 'a', '--socket', 'b'],
    ['--', 'status'],
    ['status', '--'],
    ['search', 'a', 'b'],
    ['help'],
    ['status', 'help'],
    ['search', 'help'],
    ['share', 'a', 'help'],
    ['search', '-1'],
    ['search', 'x', '--limit', '2'],
    ['search', 'x', '--limit=2'],
    ['unshare'],
    ['share'],
    ['report', 'k', '--reason'],
    ['--reason', 'why', 'report', 'k'],
    ['files', '--reason', 'why'],
    ['get'],
    ['get', 'a', 'b'],
    ['get', 'a', '--overwrite', 'false'],
    ['get', 'a', '--overwrite', '--no-overwrite'],
    ['get', 'a', '--max-peers', '0'],
    ['get', 'a', '--max-peers', '1e3'],
    ['get', 'a', '--max-peers=007'],
    ['get', 'a', '--strategy', 'fastest'],
    ['get', 'a', '--out'],
    ['get', 'a', '--out', '-'],
    ['get', 'a', '--out', 'x', '--out', 'y'],
    ['get', 'a', '--maxPeers', '3'],
    ['get', 'a', '-o', 'x'],
    ['--out', 'x', 'get', 'a'],
    ['admin', 'status'],
    ['constructor'],
    ['completion'],
    ['--get-yargs-completions', 'p2p', 'st'],
  ];
  for (const args of cases) t.equal(parseFast(args), undefined, `p2p ${args.join(' ')}`);
  t.end();
});

t.test('whatever the fast path accepts, yargs reads the same way', async (t) => {
  const commands = ['status', 'files', 'transfers', 'search', 'share', 'unshare', 'report', 'get', 'admin', 'help'];
  const values = ['adaptive', '12', 'a.txt', '1e3', '0x10', '007', '1.50', 'true', 'false', 'TRUE', 'no', 'a=b', 'x y', 'Ünï', '/tmp/p.sock', '-1', '', '-', '--'];
  const flags = [
    ...['--json', '--socket', '--socket=/s', '--socket=', '--socket=a=b', '--reason', '--reason=why', '--reason=', '--json=false', '--no-json', '-x', '--version'],
    ...['--out', '--out=/o', '--out=', '--overwrite', '--no-overwrite', '--overwrite=false', '--max-peers', '--max-peers=3', '--max-peers=0', '--strategy', '--strategy=original', '--strategy=x', '--progress', '--no-progress'],
  ];
  const token = fc.constantFrom(...commands, ...values, ...flags);
  // Any tokens in any order, and lines shaped like a command (flags, a command, then anything), which
  // the fast path accepts more often.
  const afterCommand = fc.oneof({ arbitrary: fc.constantFrom(...values), weight: 3 }, { arbitrary: fc.constantFrom(...flags), weight: 1 });
  const line = fc.oneof(
    fc.array(token, { maxLength: 6 }),
    fc
      .tuple(fc.subarray(['--json', '--socket=/s']), fc.constantFrom(...commands), fc.array(afterCommand, { maxLength: 3 }))
      .map(([before, command, after]) => [...before, command, ...after]),
  );
  let accepted = 0;
  await fc.assert(
    fc.asyncProperty(line, async (args) => {
      const fast = parseFast(args);
      if (fast === undefined || fast === 'version') return;
      accepted++;
      t.same(await viaYargs(args), fast, `p2p ${JSON.stringify(args)}`);
    }),
    { numRuns: 3000 },
  );
  // A change that made the fast path refuse everything would pass the property vacuously. About 11% of
  // the lines are accepted (330 of 3000 on average, 290 seen): 200 leaves room for an unlucky draw.
  t.ok(accepted > 200, `the fast path accepted ${accepted} of the generated command lines`);
});
