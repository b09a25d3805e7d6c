import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { ChunkPool } from '../../peerd/chunk-pool.js';
import { WorkerHasher } from '../../peerd/hasher.js';
import { sha256 } from '../../protocol/index.js';
import { repoPath } from '../helpers/root.js';

const reference = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('the worker hashes chunks in shared memory in place, the same as the main thread would', async (t) => {
  const hasher = new WorkerHasher();
  t.teardown(() => hasher.close());
  const pool = new ChunkPool(256 * 1024, 8);
  const bufs = Array.from({ length: 6 }, () => pool.acquire(1)!);
  for (const b of bufs) randomBytes(b.length).copy(b);
  // Views at odd offsets and lengths, many at once, answered in any order.
  const views = bufs.flatMap((b, i) => [b, b.subarray(i * 13, b.length - i * 7), b.subarray(1000, 1001)]);
  const hashes = await Promise.all(views.map((v) => hasher.sha256(v)));
  t.strictSame(
    hashes.map((h) => h.toString('hex')),
    views.map(reference),
    `${views.length} hashes match`,
  );
  t.equal((await hasher.sha256(Buffer.alloc(0, 0))).toString('hex'), reference(Buffer.alloc(0)), 'empty');
});

t.test('a buffer that is not shared memory is hashed on the main thread, with the same result', async (t) => {
  const hasher = new WorkerHasher();
  t.teardown(() => hasher.close());
  const b = randomBytes(100_000);
  t.equal((await hasher.sha256(b)).toString('hex'), reference(b));
  t.equal(sha256(b).toString('hex'), reference(b));
});

t.test('closing while hashes are owed still answers every one of them', async (t) => {
  const hasher = new WorkerHasher();
  const pool = new ChunkPool(1 << 20, 4);
  const b = pool.acquire(1)!;
  randomBytes(b.length).copy(b);
  const owed = [hasher.sha256(b), hasher.sha256(b.subarray(5)), hasher.sha256(b.subarray(0, 77))];
  await hasher.close();
  const got = await Promise.all(owed);
  t.strictSame(got.map((h) => h.toString('hex')), [reference(b), reference(b.subarray(5)), reference(b.subarray(0, 77))]);
  t.equal((await hasher.sha256(b)).toString('hex'), reference(b), 'and it goes on hashing on the main thread');
});

t.test('the chunk pool reuses its buffers and grows only to what is held at once', (t) => {
  const pool = new ChunkPool(1000, 3);
  t.equal(pool.acquire(1001), undefined, 'a body larger than a buffer is not taken');
  const a = pool.acquire(10)!;
  const b = pool.acquire(1000)!;
  t.equal(pool.inUse, 2);
  pool.release(a.subarray(100, 200)); // any view gives the buffer back
  t.equal(pool.inUse, 1);
  t.equal(pool.acquire(5), a, 'the freed buffer is reused');
  const c = pool.acquire(5)!;
  t.ok(c && c !== a && c !== b);
  t.equal(pool.acquire(5), undefined, 'at most `max` buffers');
  t.equal(pool.size, 3);
  pool.release(Buffer.alloc(10));
  t.equal(pool.inUse, 3, 'a foreign buffer is ignored');
  pool.release(b);
  pool.release(b);
  t.equal(pool.inUse, 2, 'a second release of the same buffer changes nothing');
  t.end();
});

t.test('a chunk and its receipt are checked in one trip: a forged or foreign signature is caught', async (t) => {
  const { generateKeyPair, signPayload, receiptPayload } = await import('../../protocol/index.js');
  const hasher = new WorkerHasher();
  t.teardown(() => hasher.close());
  const seeder = generateKeyPair().keys;
  const other = generateKeyPair().keys;
  const me = generateKeyPair().keys;
  const pool = new ChunkPool(64 * 1024, 2);
  const data = pool.acquire(1)!.subarray(0, 50_000);
  randomBytes(data.length).copy(data);
  const hash = createHash('sha256').update(data).digest();
  const payload = receiptPayload(Buffer.alloc(32, 1), 3, hash, me.peerId);
  const good = await hasher.check(data, { publicKey: seeder.publicKey, payload, signature: signPayload(seeder, payload) });
  t.strictSame({ hash: good.hash.toString('hex'), signed: good.signed }, { hash: hash.toString('hex'), signed: true }, 'honest receipt');
  const foreign = await hasher.check(data, { publicKey: seeder.publicKey, payload, signature: signPayload(other, payload) });
  t.equal(foreign.signed, false, 'signed by another key');
  const bent = Buffer.from(signPayload(seeder, payload));
  bent[0]! ^= 1;
  t.equal((await hasher.check(data, { publicKey: seeder.publicKey, payload, signature: bent })).signed, false, 'a flipped bit');
  t.equal((await hasher.check(data, { publicKey: Buffer.alloc(5), payload, signature: bent })).signed, false, 'a malformed key');
  const onMain = await hasher.check(Buffer.from(data), { publicKey: seeder.publicKey, payload, signature: signPayload(seeder, payload) });
  t.equal(onMain.signed, true, 'the same answer on the main thread (not shared memory)');
});

t.test('a warmed-up worker that has nothing to hash does not keep the daemon process alive', async (t) => {
  const { execFile } = await import('node:child_process');
  const hasher = repoPath('dist/peerd/hasher.js');
  const started = performance.now();
  const code = await new Promise<number | null>((resolve) => {
    const child = execFile(process.execPath, ['--input-type=module', '-e', `const { WorkerHasher } = await import(${JSON.stringify(hasher)}); new WorkerHasher().warm();`], { timeout: 20_000 });
    child.on('exit', (c) => resolve(c));
  });
  t.equal(code, 0, 'the process ended on its own');
  t.ok(performance.now() - started < 20_000, 'well before the timeout');
});
