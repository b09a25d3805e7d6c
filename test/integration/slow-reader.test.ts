/**
 * Issue 10: one slow reader held every upload slot of a seeder. Upload buffers came from one shared pool
 * and went back only once the socket had taken the chunk, so a client that asked for many chunks and never
 * read stalled every upload until its idle timeout (120 s). Now it holds at most its share while another
 * downloader gets the file, and the send deadline cuts it off and gives its buffers back.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { clientHandshake } from '../../peerd/handshake.js';
import { dial, generateKeyPair, toP2PError } from '../../protocol/index.js';
import { Fleet } from '../helpers/fleet.js';
import { until } from '../helpers/wait.js';
import { jsonLog, LEVEL } from '../helpers/logs.js';
import { tlsAs } from '../helpers/tls.js';

/** Short for the test; long enough that the other download (16 MiB on loopback) has no reason to need it. */
const SEND_TIMEOUT_MS = 3000;

t.test('a reader that asks for many chunks and never reads: another downloader still gets the file, and the reader is cut off at the send deadline', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startTracker();
  const log = jsonLog();
  const seeder = await fleet.startPeer('seeder', { sendTimeoutMs: SEND_TIMEOUT_MS, logger: log.logger });
  const other = await fleet.startPeer('other');
  const orig = path.join(seeder.shareDir, 'big.bin');
  Fleet.randomFile(orig, 16);
  await seeder.call('share', { paths: [orig] });
  await Fleet.held(other, 'big.bin', 1);
  const [hit] = await other.call('search', { text: 'big.bin' });
  const fileId = Buffer.from(hit!.id, 'hex');
  const server = seeder.daemon.chunkServer;

  // The slow reader: an authenticated downloader that asks for 60 chunks (far more than the socket
  // buffers hold, and than the 8 upload buffers) and then reads nothing.
  const slow = await dial(server.address!, { requestTimeoutMs: 0, tls: tlsAs(generateKeyPair().keys, seeder.daemon.keys.publicKey) });
  t.teardown(() => slow.destroy());
  await clientHandshake(slow, 0);
  slow.socket.pause();
  const asked = Array.from({ length: 60 }, (_, i) =>
    slow.request('GET_CHUNK', { fileId, index: i % 17 }, 'CHUNK', { timeoutMs: 0 }).then(
      () => 'answered',
      (err: unknown) => toP2PError(err).code,
    ),
  );
  const cutOff = log.when((l) => l.code === 'P2P_SEND_TIMEOUT');
  await until('the seeder to hold buffers for the slow reader', () => server.uploadsInProgress >= 4 || undefined);

  // Another downloader wants the same file from the same seeder now.
  const out = path.join(fleet.dir, 'got.bin');
  let guard: NodeJS.Timeout | undefined;
  const startedAt = performance.now();
  let tookMs = 0;
  const outcome = await Promise.race([
    other.call('get', { key: 'big.bin', out, overwrite: false }).then(() => {
      tookMs = Math.round(performance.now() - startedAt);
      return 'downloaded';
    }),
    cutOff.then(() => 'the slow reader was cut off first'),
    new Promise<string>((resolve) => (guard = setTimeout(() => resolve('neither, in three send deadlines'), 3 * SEND_TIMEOUT_MS))),
  ]).finally(() => clearTimeout(guard));
  t.equal(outcome, 'downloaded', `the other download completed while the slow reader still held its buffers (in ${tookMs} ms; the deadline is ${SEND_TIMEOUT_MS})`);
  t.ok(fs.readFileSync(out).equals(fs.readFileSync(orig)), 'intact');

  const warning = await cutOff;
  t.match(warning, { level: LEVEL.warn, code: 'P2P_SEND_TIMEOUT', peerId: String, heldBuffers: Number }, 'the seeder says why it closed the slow reader');
  t.ok((warning.heldBuffers as number) <= 4, `the slow reader held at most half of the 8 buffers (${String(warning.heldBuffers)})`);
  await until('every upload buffer to come back', () => server.uploadsInProgress === 0 || undefined);

  // When the slow reader reads again, it finds its connection closed: what was queued for it is lost.
  const closed = once(slow, 'close');
  slow.socket.resume();
  await closed;
  const outcomes = await Promise.all(asked);
  t.ok(outcomes.some((o) => o !== 'answered'), `not all of its requests were answered (${outcomes.filter((o) => o === 'answered').length} of 60)`);
});
