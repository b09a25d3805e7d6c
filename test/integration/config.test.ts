/**
 * Issue 11, operations: the daemons' config file (`--config FILE`, TOML), `--print-config` and its
 * provenance, the usage errors a bad file gives, `--log-format`, and `p2p completion`: all through the
 * built programs, as an operator runs them.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { run, start, tempDir, type Program } from '../helpers/programs.js';
import { until } from '../helpers/wait.js';
import type { Tap } from '../helpers/tap.js';


interface PrintedConfig {
  program: string;
  config: string | null;
  settings: Record<string, { value: string | number | boolean | null; source: 'default' | 'config' | 'command line' }>;
}

function writeConfig(dir: string, name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** A TOML string: JSON's escapes are TOML's. */
const toml = (s: string): string => JSON.stringify(s);

t.test('--print-config: every setting with its value and where it came from (default, config FILE, command line)', async (t) => {
  const dir = tempDir(t);
  const data = path.join(dir, 'tracker');
  const file = writeConfig(dir, 'tracker.toml', `# a tracker\nlisten = "127.0.0.1:7070"\ndata = ${toml(data)}\nheartbeat-ms = 300\nfailover-ms = 1500\ncluster = ["127.0.0.1:7070", "127.0.0.1:7071"]\n`);
  const args = ['--config', file, '--failover-ms', '2000', '--print-config'];

  const json = await run('p2p-tracker', [...args, '--json']);
  t.equal(json.code, 0, '--print-config --json exits 0');
  const doc = JSON.parse(json.stdout) as PrintedConfig;
  t.equal(doc.program, 'p2p-tracker');
  t.equal(doc.config, file, 'names the config file');
  t.same(doc.settings.listen, { value: '127.0.0.1:7070', source: 'config' }, 'a value from the file');
  t.same(doc.settings.data, { value: data, source: 'config' }, 'a required flag from the file');
  t.same(doc.settings['heartbeat-ms'], { value: 300, source: 'config' }, 'a number from the file, as a number');
  t.same(doc.settings['failover-ms'], { value: 2000, source: 'command line' }, 'the command line wins over the file');
  t.same(doc.settings['lease-ms'], { value: 10000, source: 'default' }, 'a default');
  t.same(doc.settings['admin-token-file'], { value: null, source: 'default' }, 'an option that is not set');
  t.same(doc.settings.cluster, { value: '127.0.0.1:7070,127.0.0.1:7071', source: 'config' }, 'a list given as a TOML array, as the command line takes it');
  t.same(doc.settings['log-format'], { value: 'json', source: 'default' }, 'logs default to JSON when stderr is not a terminal');
  t.notOk('print-id' in doc.settings, 'actions such as --print-id are not settings');
  t.notOk(fs.existsSync(data), 'nothing was started: the data folder was not made');

  const text = await run('p2p-tracker', args);
  t.equal(text.code, 0, '--print-config exits 0');
  const line = (name: string): string => text.stdout.split('\n').find((l) => l.startsWith(`${name} =`) || l.startsWith(`# ${name} `)) ?? '';
  t.match(line('listen'), new RegExp(`^listen = "127\\.0\\.0\\.1:7070"\\s+# config ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`), `text: ${line('listen')}`);
  t.match(line('failover-ms'), /^failover-ms = 2000\s+# command line$/, `text: ${line('failover-ms')}`);
  t.match(line('lease-ms'), /^lease-ms = 10000\s+# default$/, `text: ${line('lease-ms')}`);
  t.match(line('admin-token-file'), /^# admin-token-file \(not set\)\s+# default$/, `text: ${line('admin-token-file')}`);

  // The text is a config file itself: fed back, it gives the same settings.
  const again = writeConfig(dir, 'again.toml', text.stdout);
  const reread = JSON.parse((await run('p2p-tracker', ['--config', again, '--print-config', '--json'])).stdout) as PrintedConfig;
  for (const [name, s] of Object.entries(doc.settings)) t.same(reread.settings[name]!.value, s.value, `${name}: the same value when the printed text is read back`);
});

t.test('p2p-peerd: a config file sets everything, the command line still wins, and the daemon runs with that', async (t) => {
  const dir = tempDir(t);
  const tracker = start(t, 'p2p-tracker', ['--listen', '127.0.0.1:0', '--data', path.join(dir, 'tracker')]);
  const trackerAddress = String((await tracker.logged('tracker listening')).listen);
  const share = path.join(dir, 'share');
  fs.mkdirSync(share);
  const data = path.join(dir, 'data');
  const file = writeConfig(
    dir,
    'peerd.toml',
    [`trackers = [${toml(trackerAddress)}]`, `share = ${toml(share)}`, `data = ${toml(data)}`, 'listen = "127.0.0.1:0"', 'max-upload-rate = "10M"', 'max-download-rate = "1M"', 'max-uploads = 3', 'plain-chunk-links = true', ''].join('\n'),
  );
  const printed = JSON.parse((await run('p2p-peerd', ['--config', file, '--max-download-rate', '500k', '--print-config', '--json'])).stdout) as PrintedConfig;
  t.same(printed.settings['max-upload-rate'], { value: '10M', source: 'config' });
  t.same(printed.settings['max-download-rate'], { value: '500k', source: 'command line' });
  t.same(printed.settings['plain-chunk-links'], { value: true, source: 'config' });
  t.same(printed.settings.strategy, { value: 'adaptive', source: 'default' });

  // Only --config (and the override) on the command line: --trackers, --share and --data come from the file.
  const peer = start(t, 'p2p-peerd', ['--config', file, '--max-download-rate', '500k']);
  await peer.logged('peer daemon ready');
  const status = await run('p2p', ['--socket', path.join(data, 'peerd.sock'), 'status', '--json']);
  t.equal(status.code, 0, 'the daemon answers on the socket in the data folder the file named');
  const s = JSON.parse(status.stdout) as { tracker: { address: string }; limits: { maxUploadRate: number; maxDownloadRate: number; maxUploads: number } };
  t.equal(s.tracker.address, trackerAddress, 'it uses the tracker from the file');
  t.same(s.limits, { maxUploadRate: 10 * 1024 * 1024, maxDownloadRate: 500 * 1024, maxUploads: 3 }, 'and the limits from the file, but the command line one where both give it');
  peer.child.kill('SIGTERM');
  t.equal((await peer.exited).code, 0, 'and stops cleanly');
});

t.test('a bad config file is a usage error (exit 2, one line naming the file and what is wrong)', async (t) => {
  const dir = tempDir(t);
  const base = `listen = "127.0.0.1:0"\ndata = ${toml(path.join(dir, 'd'))}\n`;
  const cases: Array<[string, Program, string, RegExp]> = [
    ['an unknown key', 'p2p-tracker', `${base}heartbeat = 200\n`, /unknown key 'heartbeat'/],
    ['a snake_case key', 'p2p-peerd', 'max_upload_rate = "1M"\n', /unknown key 'max_upload_rate' \(did you mean 'max-upload-rate'\?\)/],
    ['a section', 'p2p-tracker', `${base}[tracker]\nlisten = "x"\n`, /'tracker'/],
    ['malformed TOML', 'p2p-tracker', `listen = "127.0.0.1:0"\ndata = \n`, /TOML syntax error at line 2/],
    ['an unterminated string', 'p2p-tracker', `listen = "127.0.0.1:0"\n\ndata = "/tmp\n`, /line 3/],
    ['a string where a number goes', 'p2p-tracker', `${base}heartbeat-ms = "200"\n`, /'heartbeat-ms' must be a number, not a string \("200"\)/],
    ['a number where true or false goes', 'p2p-peerd', 'plain-chunk-links = 1\n', /'plain-chunk-links' must be true or false/],
    ['a value outside the choices', 'p2p-peerd', 'strategy = "fastest"\n', /'strategy' must be one of adaptive, original/],
    ['an action', 'p2p-tracker', `${base}print-id = true\n`, /'print-id' can only be given on the command line/],
  ];
  const results = await Promise.all(cases.map(([, program, text], i) => run(program, ['--config', writeConfig(dir, `bad-${i}.toml`, text)])));
  cases.forEach(([what, program, , reason], i) => {
    const r = results[i]!;
    const file = path.join(dir, `bad-${i}.toml`);
    t.equal(r.code, 2, `${what}: exit code 2`);
    t.match(r.stderr, new RegExp(`^${program}: config ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*${reason.source}`), `${what}: ${r.stderr.trim()}`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${what}: in one line`);
    t.equal(r.stdout, '', `${what}: nothing on stdout`);
  });

  const missing = await run('p2p-tracker', ['--config', path.join(dir, 'nope.toml')]);
  t.equal(missing.code, 2, 'a missing file: exit code 2');
  t.match(missing.stderr, /nope\.toml: cannot read it: no such file/, 'and says so');
  const required = await run('p2p-peerd', ['--config', writeConfig(dir, 'partial.toml', `share = ${toml(dir)}\n`)]);
  t.equal(required.code, 2, 'a required flag in neither place: exit code 2');
  t.match(required.stderr, /missing required flags --trackers, --data/, `and names them: ${required.stderr.trim()}`);
  const typo = await run('p2p-tracker', ['--listen', '127.0.0.1:0', '--data', dir, '--heartbeat-ms', 'often']);
  t.equal(typo.code, 2, 'a number flag that is not a number on the command line: exit code 2');
  t.match(typo.stderr, /--heartbeat-ms must be a number/);
});

/** Starts a tracker with `format`, waits until it listens, stops it, and returns what it wrote on stderr. */
async function trackerLog(t: Tap, dir: string, format: 'pretty' | 'json'): Promise<string> {
  const tracker = start(t, 'p2p-tracker', ['--listen', '127.0.0.1:0', '--data', path.join(dir, format), '--log-format', format]);
  await until(`the ${format} tracker to say it listens`, () => tracker.stderr().includes('tracker listening'));
  tracker.child.kill('SIGTERM');
  t.equal((await tracker.exited).code, 0, `--log-format ${format}: exits 0 on SIGTERM`);
  return tracker.stderr();
}

t.test('--log-format pretty writes human lines, json one JSON object a line', async (t) => {
  const dir = tempDir(t);
  const [pretty, json] = await Promise.all([trackerLog(t, dir, 'pretty'), trackerLog(t, dir, 'json')]);
  const prettyLines = pretty.trim().split('\n');
  t.match(pretty, /^\[[\d-]+ [\d:.]+\] INFO \(p2p-tracker\): tracker listening$/m, 'pretty: a time, the level and the message on one line');
  t.match(pretty, /^\s+listen: "127\.0\.0\.1:\d+"$/m, 'and the fields below it');
  t.notOk(prettyLines.some((l) => l.startsWith('{')), 'no JSON lines');
  const jsonLines = json.trim().split('\n');
  t.ok(jsonLines.every((l) => typeof JSON.parse(l) === 'object'), 'json: every line is a JSON object');
  t.ok(jsonLines.some((l) => (JSON.parse(l) as { msg?: string }).msg === 'tracker listening'), 'with the same messages');
  const bad = await run('p2p-peerd', ['--trackers', '127.0.0.1:1', '--share', dir, '--data', dir, '--log-format', 'xml']);
  t.equal(bad.code, 2, 'an unknown format: exit code 2');
  t.match(bad.stderr, /^p2p-peerd: .*log-format.*"pretty", "json"/, `one line naming the choices: ${bad.stderr.trim()}`);
});

t.test('p2p completion prints a bash (or zsh) completion script that completes the commands', async (t) => {
  const bash = await run('p2p', ['completion'], { SHELL: '/bin/bash' });
  t.equal(bash.code, 0, 'p2p completion exits 0');
  t.match(bash.stdout, /complete .* p2p$/m, 'a bash script that registers completion for p2p');
  t.match(bash.stdout, /p2p --get-yargs-completions/, 'asking p2p itself for the words');
  const zsh = await run('p2p', ['completion'], { SHELL: '/usr/bin/zsh' });
  t.match(zsh.stdout, /^#compdef p2p/, 'a zsh script when the shell is zsh');

  const words = await run('p2p', ['--get-yargs-completions', 'p2p', '']);
  t.equal(words.code, 0);
  for (const command of ['status', 'files', 'share', 'unshare', 'search', 'get', 'transfers', 'report', 'admin', 'completion']) t.match(words.stdout, new RegExp(`^${command}$`, 'm'), `completes ${command}`);
  const get = await run('p2p', ['--get-yargs-completions', 'p2p', 'get', 'x', '--']);
  t.match(get.stdout, /^--out$/m, "and a command's flags");
  const admin = await run('p2p', ['--get-yargs-completions', 'p2p', 'admin', '']);
  t.match(admin.stdout, /^blacklist$/m, "and a command's subcommands");
});
