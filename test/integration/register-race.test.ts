/**
 * A file that changes while its REGISTER is still on its way (a file copied into the share folder is
 * hashed half-written, then again once whole): the stale id's UNREGISTER can reach the tracker before that
 * REGISTER does. The name must still end up naming one file, not two (`p2p get NAME` refuses a name that
 * names several). Real daemons and sockets; the first REGISTER is held back in the peer's tracker client.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Fleet } from '../helpers/fleet.js';
import { until } from '../helpers/wait.js';

t.test('a REGISTER overtaken by the UNREGISTER of the same id leaves the name naming the current file only', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const s = await fleet.startPeer('s');
  const d = await fleet.startPeer('d');

  // Hold the first REGISTER (the half-written file's) until the file has changed and been announced again.
  const tracker = s.daemon.tracker;
  const send = tracker.request.bind(tracker) as (...args: unknown[]) => Promise<unknown>;
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let holding = true;
  let heldSent: Promise<unknown> | undefined;
  (tracker as unknown as { request: (...args: unknown[]) => Promise<unknown> }).request = (...args: unknown[]) => {
    if (args[0] === 'REGISTER' && holding) {
      holding = false;
      heldSent = held.then(() => send(...args));
      return heldSent;
    }
    return send(...args);
  };

  const file = path.join(s.shareDir, 'f.bin');
  fs.writeFileSync(file, Buffer.alloc(300_000, 1));
  const first = await until('the first version hashed', async () => (await s.call('files', {})).find((f) => f.name === 'f.bin'), 10_000, 20);
  fs.writeFileSync(file, Buffer.alloc(500_000, 2));
  const second = await until('the second version hashed', async () => {
    const f = (await s.call('files', {})).find((x) => x.name === 'f.bin');
    return f && f.id !== first.id ? f : undefined;
  }, 10_000, 20);
  await until('the second version registered', async () => ((await d.call('search', { text: 'f.bin' })).some((h) => h.id === second.id) ? true : undefined), 10_000, 20);

  release(); // the stale REGISTER lands now, after the UNREGISTER of its id
  await heldSent;
  const hits = await until('the name to name one file', async () => {
    const h = (await d.call('search', { text: 'f.bin' })).filter((x) => x.name === 'f.bin');
    return h.length === 1 ? h : undefined;
  }, 5_000, 20);
  t.same(hits.map((h) => h.id), [second.id], 'only the current file is under the name');
});
