/**
 * Issue 10, "a per-peer registration cap": the tracker caps what one peer registers in all (files, and
 * bytes of file names), however it splits that over REGISTERs, and at once or concurrently, so one peer
 * cannot fill the trackers' memory or their snapshots. Checked on a real main and backup: the cap is
 * enforced on the main before the write is proposed, and the backup holds no more than the main allowed.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { generateKeyPair, type Address, type Body, type Connection, type KeyPair } from '../../protocol/index.js';
import { Fleet } from '../helpers/fleet.js';
import { until } from '../helpers/wait.js';
import { peerHandshake } from '../helpers/tls.js';
import type { Tap } from '../helpers/tap.js';

type FileEntry = Body<'REGISTER'>['files'][number];

const MAX_FILES = 10;
const MAX_NAME_BYTES = 400;

/** A peer session with the tracker at `a`, as a hand-written client would have it. */
async function session(t: Tap, a: Address, keys: KeyPair = generateKeyPair().keys): Promise<{ conn: Connection; peerId: string }> {
  const { conn, welcome } = await peerHandshake(a, keys, { requestTimeoutMs: 5000 }, 0);
  t.teardown(() => conn.destroy());
  return { conn, peerId: welcome.peerId };
}

const file = (name: string): FileEntry => ({ id: randomBytes(32), size: 1000, name, complete: true });
const files = (n: number, prefix: string): FileEntry[] => Array.from({ length: n }, (_, i) => file(`${prefix}-${i}.bin`));

/** What a REGISTER came to: 'ok', or the error code it was refused with. */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

t.test('a peer cannot register more files than its cap, split over REGISTERs or sent at once', async (t) => {
  const fleet = new Fleet(t);
  const [main, backup] = await fleet.startCluster(2, { maxFilesPerPeer: MAX_FILES, maxNameBytesPerPeer: 100_000 });
  const { conn, peerId } = await session(t, fleet.trackerAddress);
  const register = (list: FileEntry[]): Promise<string> => outcome(conn.request('REGISTER', { files: list }, 'OK'));

  const first = files(6, 'a');
  t.equal(await register(first), 'ok', '6 files: under the cap');
  const refused = conn.request('REGISTER', { files: files(6, 'b') }, 'OK');
  await t.rejects(refused, { code: 'P2P_REGISTRATION_QUOTA', message: /12 files.*at most 10/ }, '6 more in a second REGISTER would make 12: refused, saying the cap');
  t.equal(await register(first), 'ok', 'announcing the same 6 again (a reconnection) is no growth');
  t.equal(await register(files(4, 'c')), 'ok', '4 more reach the cap exactly');
  t.equal(await register(files(1, 'd')), 'P2P_REGISTRATION_QUOTA', 'one more file is refused');
  t.equal(main!.state.peerFileCount(peerId), MAX_FILES, 'the main holds the cap and no more');

  await conn.request('UNREGISTER', { all: false, ids: first.slice(0, 2).map((f) => ({ id: f.id })) }, 'OK');
  t.equal(await register(files(2, 'e')), 'ok', 'files unregistered make room again');
  t.equal(await register(files(1, 'f')), 'P2P_REGISTRATION_QUOTA', 'and the cap holds after that');

  // Many REGISTERs in flight at once: each is checked against what the others in flight add.
  const other = await session(t, fleet.trackerAddress);
  const burst = await Promise.all(Array.from({ length: 5 }, (_, i) => outcome(other.conn.request('REGISTER', { files: files(3, `burst${i}`) }, 'OK'))));
  t.same(burst.filter((o) => o === 'ok').length, 3, `3 of 5 concurrent REGISTERs of 3 files fit under the cap of 10 (${burst.join(', ')})`);
  t.ok(burst.filter((o) => o !== 'ok').every((o) => o === 'P2P_REGISTRATION_QUOTA'), 'the others are refused with P2P_REGISTRATION_QUOTA');
  t.equal(main!.state.peerFileCount(other.peerId), 9, 'the main holds 9 files of that peer');

  await until('the backup to apply every registration', () => (backup!.state.stateHash() === main!.state.stateHash() ? true : undefined));
  t.equal(backup!.state.peerFileCount(peerId), MAX_FILES, 'the backup (and its snapshots) holds no more than the cap of the first peer');
  t.equal(backup!.state.peerFileCount(other.peerId), 9, 'nor of the second');

  const honest = await session(t, fleet.trackerAddress);
  t.equal(await outcome(honest.conn.request('REGISTER', { files: files(MAX_FILES, 'h') }, 'OK')), 'ok', 'another peer is not affected: it has a cap of its own');
});

t.test('a peer cannot register more bytes of file names than its cap', async (t) => {
  const fleet = new Fleet(t);
  await fleet.startCluster(2, { maxFilesPerPeer: 1000, maxNameBytesPerPeer: MAX_NAME_BYTES });
  const { conn, peerId } = await session(t, fleet.trackerAddress);
  const register = (list: FileEntry[]): Promise<string> => outcome(conn.request('REGISTER', { files: list }, 'OK'));
  const long = (i: number): FileEntry => file(`${String(i).padStart(3, '0')}-${'x'.repeat(96)}`); // 100 bytes

  const four = [0, 1, 2, 3].map(long);
  t.equal(await register(four), 'ok', '4 names of 100 bytes: 400 bytes, the cap');
  const fifth = conn.request('REGISTER', { files: [long(4)] }, 'OK');
  await t.rejects(fifth, { code: 'P2P_REGISTRATION_QUOTA', message: /500 bytes.*at most 400/ }, 'a fifth is refused though the file count is far from its cap');
  t.equal(await register([{ ...four[0]!, name: 'short.bin' }]), 'ok', 'renaming a file to a shorter name is allowed');
  t.equal(await register([file('y'.repeat(91))]), 'ok', 'and the bytes it freed can be used again');
  t.equal(await register([file('z')]), 'P2P_REGISTRATION_QUOTA', 'but no more');
  t.equal(fleet.tracker.state.registrationTotals(peerId).nameBytes, MAX_NAME_BYTES, 'the main counts exactly 400 bytes of names');
});
