/**
 * Tracker links prove the cluster secret both ways: a stranger who claims to be a tracker can neither
 * write (MERGE, REPLICATE), read the replicated state (SYNC_REQUEST), nor sway the chain of command.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { Tracker } from '../../daemon/tracker.js';
import { clusterProof, dial, Role, type Address } from '../../protocol/index.js';
import { reservePorts } from '../helpers/wait.js';

t.test('a stranger claiming to be a tracker is refused everything', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2p-cluster-auth-'));
  const ports = await reservePorts(2);
  const cluster: Address[] = ports.map((port) => ({ host: '127.0.0.1', port }));
  const trackers = cluster.map(
    (listen, i) => new Tracker({ listen, cluster, dataDir: path.join(dir, `t${i}`), adminToken: 'admin-token', clusterSecret: 'the-cluster-secret', heartbeatMs: 50, failoverMs: 300 }),
  );
  t.teardown(async () => {
    for (const tr of trackers) await tr.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  for (const tr of trackers) await tr.listen();
  // The genuine pair authenticates: one of them becomes main.
  const deadline = Date.now() + 5000;
  while (!trackers.some((tr) => tr.cluster.isPrimary) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.ok(trackers[0]!.cluster.isPrimary, 'the cluster forms with the shared secret');

  const stranger = await dial(cluster[0]!);
  t.teardown(() => stranger.destroy());
  const challenge = await stranger.request('HELLO', { role: Role.tracker, publicKey: Buffer.alloc(0), nonce: randomBytes(32), listenPort: 0, software: 'mallory' }, 'CHALLENGE');
  await t.rejects(
    stranger.request('MERGE', { rank: 1, term: 99, ops: JSON.stringify([{ op: 'blacklist-add', entry: { target: '10.6.6.6', reason: 'pwned', since: 1, addedBy: 'mallory' } }]) }, 'OK'),
    { code: 'P2P_NOT_AUTHENTICATED' },
    'no write before the cluster secret is proven',
  );
  await t.rejects(stranger.request('SYNC_REQUEST', { rank: 1, term: 99 }, 'SYNC_STATE'), { code: 'P2P_NOT_AUTHENTICATED' }, 'no state either');
  await t.rejects(stranger.request('AUTH', { signature: clusterProof('a-guess', 'client', challenge.nonce) }, 'WELCOME'), { code: 'P2P_UNAUTHORIZED' }, 'a wrong secret is refused');
  t.same(trackers[0]!.state.blacklistEntries(), [], 'nothing the stranger sent took effect');
  t.ok(trackers[0]!.cluster.isPrimary, 'and the chain of command is undisturbed');
});
