/**
 * A download ends through one cleanup point whichever way it ends. These cover aborts before the first
 * chunk is asked for, which once left `run()` waiting forever: the abort is answered at once, and a holder
 * still being dialled and measured is hung up on instead of being left to its handshake timeout.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { Download, type DownloadDeps } from '../../peerd/downloader.js';
import { PeerDb } from '../../peerd/db.js';
import type { BlacklistCache } from '../../peerd/blacklist-cache.js';
import type { TrackerClient } from '../../peerd/tracker-client.js';
import { generateKeyPair, silentLogger, type Body } from '../../protocol/index.js';
import { identityOf } from '../helpers/tls.js';
import type { Tap } from '../helpers/tap.js';


function deps(t: Tap, lookup: () => Promise<Body<'LOOKUP_RESULT'>>): DownloadDeps {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-download-'));
  const db = new PeerDb(dir);
  t.teardown(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const keys = generateKeyPair().keys;
  return {
    keys,
    identity: identityOf(keys),
    tracker: { request: lookup } as unknown as TrackerClient,
    blacklist: { knownBanned: () => false } as unknown as BlacklistCache,
    db,
    logger: silentLogger,
    advertisePort: () => 0,
    onBadData: () => undefined,
  };
}

const request = (dir = os.tmpdir()) => ({ fileId: Buffer.alloc(32, 7), name: 'film.bin', target: path.join(dir, 'film.bin'), overwrite: false });

t.test('an abort while the tracker has not answered yet ends the download at once', async (t) => {
  const d = new Download(deps(t, () => new Promise(() => undefined)), request());
  const run = d.run();
  d.abort('the p2p command went away');
  await t.rejects(run, { code: 'P2P_CONNECTION_CLOSED', message: 'the p2p command went away' });
});

t.test('an abort before run() is refused at once too', async (t) => {
  const d = new Download(deps(t, () => new Promise(() => undefined)), request());
  d.abort();
  await t.rejects(d.run(), { code: 'P2P_CONNECTION_CLOSED' });
});

t.test('an abort while a holder is being measured hangs up on it (adaptive and original)', async (t) => {
  for (const strategy of ['adaptive', 'original'] as const) {
    // A holder that accepts the connection and then never says a word.
    const server = net.createServer();
    const sockets: net.Socket[] = [];
    server.on('connection', (s) => sockets.push(s));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.teardown(() => {
      for (const s of sockets) s.destroy();
      server.close();
    });
    const port = (server.address() as net.AddressInfo).port;
    const holder = { peerId: 'cd'.repeat(20), publicKey: generateKeyPair().keys.publicKey, host: '127.0.0.1', port, complete: true };
    const d = new Download(deps(t, async () => ({ peers: [holder] }) as unknown as Body<'LOOKUP_RESULT'>), { ...request(), strategy });
    const run = d.run();
    const [socket] = (await once(server, 'connection')) as [net.Socket];
    const closed = once(socket, 'close');
    const abortedAt = performance.now();
    d.abort();
    await t.rejects(run, { code: 'P2P_CONNECTION_CLOSED' }, `${strategy}: the download ends`);
    await closed;
    // The handshake would give up by itself only after 3 s.
    t.ok(performance.now() - abortedAt < 2000, `${strategy}: the holder's connection was closed by the cleanup (${Math.round(performance.now() - abortedAt)} ms)`);
  }
});
