/**
 * Issue 11: the systemd units in ops/systemd run the daemons as a dedicated user, hardened, restarted on
 * failure, logging to the journal; `systemd-analyze verify` accepts them (their ExecStart pointed at this
 * checkout's programs, since /usr/local/bin has none here).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { PROGRAMS, ROOT, run, tempDir } from '../helpers/programs.js';

const exec = promisify(execFile);
const UNITS = ['p2p-tracker.service', 'p2p-peerd.service'] as const;

/** The unit's settings, key -> values (a key may repeat). */
function settings(text: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) map.set(m[1]!, [...(map.get(m[1]!) ?? []), m[2]!]);
  }
  return map;
}

t.test('each unit runs its daemon as user p2pshare, hardened, restarted on failure, logging to the journal', async (t) => {
  for (const unit of UNITS) {
    const s = settings(fs.readFileSync(path.join(ROOT, 'ops', 'systemd', unit), 'utf8'));
    const one = (key: string): string | undefined => s.get(key)?.at(-1);
    t.equal(one('User'), 'p2pshare', `${unit}: a dedicated user`);
    t.equal(one('Restart'), 'on-failure', `${unit}: restarted on failure`);
    t.equal(one('ProtectSystem'), 'strict', `${unit}: the system is read-only to it`);
    t.equal(one('ProtectHome'), 'true', `${unit}: no home folders`);
    t.equal(one('NoNewPrivileges'), 'true', `${unit}: no new privileges`);
    t.equal(one('StandardError'), 'journal', `${unit}: logs to the journal`);
    t.match(one('StateDirectory'), /^p2pshare\//, `${unit}: its --data is a state directory under /var/lib/p2pshare`);
    t.equal(one('StateDirectoryMode'), '0700', `${unit}: mode 0700`);
    t.match(one('ExecStart'), new RegExp(`--data /var/lib/${one('StateDirectory')}( |$)`), `${unit}: --data is that state directory`);
    t.notOk(s.has('MemoryDenyWriteExecute'), `${unit}: no MemoryDenyWriteExecute (it breaks the JIT)`);
  }
  const peerd = settings(fs.readFileSync(path.join(ROOT, 'ops', 'systemd', 'p2p-peerd.service'), 'utf8'));
  const share = /--share (\S+)/.exec(peerd.get('ExecStart')![0]!)?.[1];
  t.ok(share && peerd.get('ReadWritePaths')?.includes(share), `the peer daemon may write its share folder (${share}), where downloads land`);
});

t.test("each unit's command line, with the example config from ops/config, is accepted (--print-config)", async (t) => {
  for (const [unit, program, config] of [
    ['p2p-tracker.service', 'p2p-tracker', 'tracker.toml'],
    ['p2p-peerd.service', 'p2p-peerd', 'peerd.toml'],
  ] as const) {
    const exec = settings(fs.readFileSync(path.join(ROOT, 'ops', 'systemd', unit), 'utf8')).get('ExecStart')![0]!.split(' ');
    t.equal(exec[0], `/usr/local/bin/${program}`, `${unit} runs ${program}`);
    const args = exec.slice(1).map((a) => (a === `/etc/p2pshare/${config}` ? path.join(ROOT, 'ops', 'config', config) : a));
    const r = await run(program, [...args, '--print-config', '--json']);
    t.equal(r.code, 0, `${unit}: its flags and ops/config/${config} are accepted (${r.stderr.trim()})`);
    const printed = JSON.parse(r.stdout) as { settings: Record<string, { source: string }> };
    t.ok(Object.values(printed.settings).some((v) => v.source === 'config'), 'and the example config sets some of them');
  }
});

t.test('systemd-analyze verify accepts the units', async (t) => {
  const analyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => fs.existsSync(p));
  if (!analyze) {
    t.comment('systemd-analyze is not installed here: the units were checked above without it');
    return;
  }
  const dir = tempDir(t, 'p2p-units-');
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  for (const [program, script] of Object.entries(PROGRAMS)) {
    fs.writeFileSync(path.join(bin, program), `#!/bin/sh\nexec "${process.execPath}" "${path.join(ROOT, script)}" "$@"\n`, { mode: 0o755 });
  }
  const copies = UNITS.map((unit) => {
    const copy = path.join(dir, unit);
    fs.writeFileSync(copy, fs.readFileSync(path.join(ROOT, 'ops', 'systemd', unit), 'utf8').replaceAll('/usr/local/bin/', `${bin}/`));
    return copy;
  });
  const result = await exec(analyze, ['verify', ...copies]).then(
    (r) => ({ code: 0, output: r.stdout + r.stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, output: err.stdout + err.stderr }),
  );
  t.equal(result.code, 0, 'systemd-analyze verify exits 0');
  t.equal(result.output.trim(), '', `and has nothing to say (${result.output.trim()})`);
});
