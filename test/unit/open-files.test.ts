import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { OpenFiles } from '../../peerd/open-files.js';
import { turn } from '../helpers/net.js';

/** Open descriptors of this process that point at `dir` (Linux: /proc/self/fd). */
function openIn(dir: string): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir)) n++;
    } catch {
      // closed while we looked
    }
  }
  return n;
}

/** Closing is asynchronous: let the event loop turn until `dir` has `n` descriptors open (or give up). */
async function untilOpen(dir: string, n: number): Promise<number> {
  for (let i = 0; i < 1000 && openIn(dir) !== n; i++) await turn();
  return openIn(dir);
}

t.test('a file stays open between reads, at most `max` stay open, and none leak', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'open-files-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const files = Array.from({ length: 5 }, (_, i) => {
    const p = path.join(dir, `f${i}`);
    fs.writeFileSync(p, `content ${i}`);
    return p;
  });
  const open = new OpenFiles(3);
  const read = (p: string): Promise<string> =>
    open.use(p, async (fh) => {
      const b = Buffer.alloc(20);
      const { bytesRead } = await fh.read(b, 0, 20, 0);
      return b.subarray(0, bytesRead).toString();
    });
  t.equal(await read(files[0]!), 'content 0');
  t.equal(await read(files[0]!), 'content 0');
  t.equal(openIn(dir), 1, 'one descriptor for two reads of one file');
  for (const p of files) await read(p);
  t.equal(open.size, 3, 'the least recently used beyond 3 were closed');
  t.equal(await untilOpen(dir, 3), 3);
  // A handle in use is not closed under its reader, even when forgotten.
  let release: () => void = () => undefined;
  const held = open.use(files[4]!, (fh) => new Promise<number>((resolve) => (release = () => void fh.stat().then((s) => resolve(s.size)))));
  open.forget(files[4]!);
  await turn();
  release();
  t.equal(await held, 'content 4'.length, 'the forgotten handle still worked for its reader');
  open.closeAll();
  t.equal(await untilOpen(dir, 0), 0, 'all closed');
  await t.rejects(read(path.join(dir, 'missing')), { code: 'ENOENT' });
  fs.writeFileSync(path.join(dir, 'missing'), 'late');
  t.equal(await read(path.join(dir, 'missing')), 'late', 'a failed open is not cached');
  open.closeAll();
});
