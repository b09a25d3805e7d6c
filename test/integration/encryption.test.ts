/**
 * Issue 10: every link is TLS 1.3, and each side checks the other's key.
 * - A sniffer on the path of every link (peer to tracker, peer to peer, admin to tracker) sees no admin
 *   token, no file name and no file content, while everything works through it.
 * - A peer refuses a tracker that proves another key than the one pinned for it, or than the one it
 *   proved on first contact; pinning the new id lets it in again.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { AdminClient } from '../../cli/admin.js';
import { generateKeyPair, formatAddress } from '../../protocol/index.js';
import { ADMIN_TOKEN, Fleet } from '../helpers/fleet.js';
import { until } from '../helpers/wait.js';
import { sniffedPeers } from '../helpers/net.js';

t.test('a sniffer on every link sees no admin token, no file name and no file content', async (t) => {
  // The seeder tells the tracker to send downloaders through the sniffer.
  const { fleet, seeder, downloader, onTrackerLink, onPeerLink } = await sniffedPeers(t);

  const name = 'quarterly-secret-plans.txt';
  const marker = 'THE-CONTENT-MARKER-7f3a9';
  fs.writeFileSync(path.join(seeder.shareDir, name), `${marker}\n`.repeat(50_000));
  await Fleet.held(downloader, name, 1);
  const out = path.join(fleet.dir, 'got.txt');
  const got = await downloader.call('get', { key: name, out, overwrite: false });
  t.equal(fs.readFileSync(out, 'utf8'), `${marker}\n`.repeat(50_000), 'the download through the sniffer is intact');
  t.same(got.peers.map((p) => p.address), [formatAddress(onPeerLink.address.host, onPeerLink.address.port)], 'it came through the sniffed link');

  const admin = await AdminClient.connect(formatAddress(onTrackerLink.address.host, onTrackerLink.address.port), ADMIN_TOKEN);
  await admin.add('10.66.66.66', `reason ${marker}`);
  admin.close();

  const wire = Buffer.concat([onTrackerLink.seen(), onPeerLink.seen()]);
  t.ok(onTrackerLink.bytes() > 1000 && onPeerLink.bytes() > 600_000, `the sniffer saw the traffic (${onTrackerLink.bytes()} bytes to the tracker, ${onPeerLink.bytes()} between peers)`);
  for (const [what, secret] of [
    ['the admin token', ADMIN_TOKEN],
    ['the file name', name],
    ['the file content', marker],
    ['a name fragment', 'secret-plans'],
  ] as const) {
    t.equal(wire.indexOf(secret), -1, `${what} never appears on the wire`);
  }
});

t.test('a peer refuses a tracker whose key is not the pinned one, or not the one it proved before', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const port = fleet.trackerAddress.port;
  const realId = fleet.tracker.identity.keys.peerId;

  const wrongPin = await fleet.startPeer('wrong-pin', { trackers: [{ ...fleet.trackerAddress, id: generateKeyPair().keys.peerId }] });
  const pinned = await fleet.startPeer('pinned', { trackers: [{ ...fleet.trackerAddress, id: realId }] });
  const learner = await fleet.startPeer('learner');
  await until('the pinned peer and the learner to be connected', async () => ((await pinned.call('status', {})).tracker.state === 'connected' && (await learner.call('status', {})).tracker.state === 'connected') || undefined, 5000);
  t.pass('a peer with the right pin, and one that learns the key on first contact, connect');
  t.not((await wrongPin.call('status', {})).tracker.state, 'connected', 'a peer with another id pinned does not connect');
  await t.rejects(wrongPin.call('search', { text: '' }), 'and can do nothing there');

  // The tracker is reinstalled on the same address with a new key (a new --data).
  await fleet.tracker.close();
  await fleet.startTracker({ dataDir: path.join(fleet.dir, 'tracker-reinstalled') }, port);
  const newId = fleet.tracker.identity.keys.peerId;
  t.not(newId, realId, 'the reinstalled tracker has a new key');
  await until('the learner to notice the tracker went away', async () => ((await learner.call('status', {})).tracker.state !== 'connected' ? true : undefined), 5000);
  t.not((await learner.call('status', {})).tracker.state, 'connected', 'the learner refuses the changed key');
  t.not((await pinned.call('status', {})).tracker.state, 'connected', 'the pinned peer refuses it too');

  // The operator pins the new id: the peer daemon restarts with it and connects.
  await learner.stop();
  const repinned = await fleet.startPeer('learner-again', { trackers: [{ ...fleet.trackerAddress, id: newId }], dataDir: learner.dataDir });
  await until('the re-pinned peer to connect', async () => ((await repinned.call('status', {})).tracker.state === 'connected' ? true : undefined), 5000);
  t.pass('with the new id pinned, the same peer (same --data) connects again');
});
