/**
 * Fuzzing live daemons (issue 3): random and mutated bytes sent to a running tracker, a peer's chunk
 * server and its control socket, inside TLS as every client speaks (issue 10), and malformed RAFT events
 * and garbage frames on a tracker link that proved a member's key; plus raw bytes to the TLS listeners
 * themselves, before any TLS. The only acceptable outcomes are ERROR frames with our own codes and a
 * closed connection; a P2P_INTERNAL answer (an unexpected exception behind a handler), bytes our own
 * framer cannot read, or a connection that never closes are failures. Meanwhile healthy clients (a
 * peer daemon searching and downloading, a raw session pinging) carry on and the daemons never crash
 * (they run in this process: an uncaught exception fails the file).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import fc from 'fast-check';
import t from 'tap';
import { AdminClient } from '../../cli/admin.js';
import type { RaftMessage } from '../../daemon/raft/messages.js';
import {
  clientOptions,
  decodeBody,
  encodeLinkClaim,
  encodeFrame,
  Framer,
  generateKeyPair,
  isErrorCode,
  Messages,
  messageByCode,
  Role,
  type Address,
  type Body,
  type Frame,
  type KeyPair,
  type MessageName,
  type TrackerLinkClaim,
} from '../../protocol/index.js';
import { frame } from '../helpers/bytes.js';
import { ADMIN_TOKEN, Fleet } from '../helpers/fleet.js';
import { anyBytes, mutate, mutation } from '../helpers/mutate.js';
import { splitAt } from '../helpers/roundtrip.js';
import { identityOf } from '../helpers/tls.js';
import { reservePorts, until } from '../helpers/wait.js';

/** Runs per property; raise it (P2P_FUZZ_RUNS=5000) for a longer hunt. */
const RUNS = Math.max(2, Number(process.env.P2P_FUZZ_RUNS) || 100);

interface Outcome {
  frames: Frame[];
  /** Set if the server's bytes did not parse as frames. */
  garbled?: string;
  closed: boolean;
}

/** A raw socket that records the frames it receives. */
class Raw {
  readonly frames: Frame[] = [];
  garbled: string | undefined;
  private readonly framer = new Framer(64 * 1024 * 1024);
  private readonly changed = new Set<() => void>();
  private nextId = 1;
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      if (this.garbled) return;
      try {
        this.framer.push(chunk, (f) => this.frames.push({ ...f, body: Buffer.from(f.body) }));
      } catch (err) {
        this.garbled = (err as Error).message;
      }
      this.notify();
    });
    socket.on('close', () => this.notify());
    socket.on('error', () => undefined);
  }

  /** To a daemon's TCP port in TLS as `keys` (a new key if none), as every client speaks; `plain`: raw TCP. */
  static async connect(target: Address | string, keys: KeyPair = generateKeyPair().keys, plain = false): Promise<Raw> {
    const secure = typeof target !== 'string' && !plain;
    const socket =
      typeof target === 'string'
        ? net.connect(target)
        : secure
          ? tls.connect({ ...clientOptions({ identity: identityOf(keys), verify: () => undefined }, target.host), port: target.port, host: target.host })
          : net.connect(target.port, target.host);
    await new Promise<void>((resolve, reject) => {
      socket.once(secure ? 'secureConnect' : 'connect', resolve);
      socket.once('error', reject);
    });
    return new Raw(socket);
  }

  private notify(): void {
    for (const f of [...this.changed]) f();
  }

  /** Resolves with `check()`'s first value other than undefined, re-checked on every arrival and on close. */
  private when<T>(what: string, check: () => T | undefined, ms: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        const v = check();
        if (v === undefined) return;
        clearTimeout(timer);
        this.changed.delete(done);
        resolve(v);
      };
      const timer = setTimeout(() => {
        this.changed.delete(done);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      this.changed.add(done);
      done();
    });
  }

  async answer(id: number, ms = 3000): Promise<Frame> {
    const f = await this.when(`an answer to request ${id}`, () => this.frames.find((x) => x.requestId === id) ?? (this.socket.closed ? null : undefined), ms);
    if (!f) throw new Error(`closed without answering request ${id}`);
    return f;
  }

  request<N extends MessageName>(name: N, body: Body<N>): number {
    const id = this.nextId++;
    this.socket.write(encodeFrame(name, id, body));
    return id;
  }

  /** HELLO as a peer (TLS proved the key this Raw connected with). */
  async handshake(): Promise<void> {
    const hello = await this.answer(this.request('HELLO', { role: Role.peer, listenPort: 0, software: 'fuzz', link: Buffer.alloc(0) }));
    if (hello.name !== 'WELCOME') throw new Error(`HELLO answered with ${hello.name}`);
    this.frames.length = 0;
  }

  /** HELLO as tracker `claim.from` (this Raw connected with the key pinned for that rank). */
  async trackerHandshake(claim: TrackerLinkClaim): Promise<void> {
    const hello = await this.answer(this.request('HELLO', { role: Role.tracker, listenPort: 0, software: 'fuzz', link: encodeLinkClaim(claim) }));
    if (hello.name !== 'WELCOME') throw new Error(`HELLO answered with ${hello.name}`);
    this.frames.length = 0;
  }

  async ping(): Promise<boolean> {
    return (await this.answer(this.request('PING', {}))).name === 'PONG';
  }

  /** Writes `pieces`, says it is done (FIN), and waits for the server to close its side too. */
  async finish(pieces: readonly Buffer[], ms = 3000): Promise<Outcome> {
    for (const p of pieces) this.socket.write(p);
    this.socket.end();
    const closed = await this.when('the server to close', () => (this.socket.closed ? true : undefined), ms).catch(() => false);
    this.socket.destroy();
    return { frames: this.frames, garbled: this.garbled, closed };
  }
}

/** Why an outcome is unacceptable, or undefined if it is fine. */
function problem(o: Outcome): string | undefined {
  if (!o.closed) return 'the connection was still open 3 s after the client finished (hung)';
  if (o.garbled) return `the server sent bytes our framer rejects: ${o.garbled}`;
  for (const f of o.frames) {
    if (Messages[f.name].kind === 'request') return `the server sent a ${f.name} request to a client`;
    if (f.name !== 'ERROR') continue;
    let code: string;
    try {
      code = decodeBody('ERROR', f.body).code;
    } catch {
      return 'the server sent a malformed ERROR frame';
    }
    if (!isErrorCode(code)) return `ERROR with a code that is not ours: ${code}`;
    if (code === 'P2P_INTERNAL') return `ERROR P2P_INTERNAL (an unexpected exception): ${decodeBody('ERROR', f.body).message}`;
  }
  return undefined;
}

const codesOf = (o: Outcome): string[] => o.frames.filter((f) => f.name === 'ERROR').map((f) => decodeBody('ERROR', f.body).code);

/** The same bytes cut into pieces (each written separately). */
const pieces = (b: Buffer, cuts: readonly number[]): Buffer[] =>
  splitAt(b, [...new Set(cuts.map((c) => c % Math.max(1, b.length)))].filter((c) => c > 0).sort((x, y) => x - y)).filter((p) => p.length > 0);

const knownCodes = messageByCode.flatMap((n, code) => (n ? [code] : []));
/** A valid header with a real message type and a random body: reaches the decoders and handlers. */
const plausibleFrame = fc.tuple(fc.constantFrom(...knownCodes), fc.nat({ max: 0xffffffff }), anyBytes(160)).map(([type, id, body]) => frame(type, id, body));

const enc = <N extends MessageName>(name: N, id: number, body: Body<N>): Buffer => encodeFrame(name, id, body);
const raft = (message: string): Buffer => enc('RAFT', 0, { message });

/** Who a probe is before it sends its bytes: nobody, a peer that did the handshake, or tracker rank 1. */
type Login = 'none' | 'peer' | 'rank 1';

const RAFT_KINDS = ['status', 'append', 'append-reply', 'vote', 'vote-reply', 'snapshot', 'snapshot-reply', 'merge', 'merge-reply', 'timeout-now'] as const satisfies ReadonlyArray<RaftMessage['t']>;
/** Every field some RAFT message has, besides `t` and `term`. */
const RAFT_FIELDS = ['role', 'last', 'applied', 'fresh', 'leader', 'prev', 'entries', 'commit', 'ok', 'match', 'hint', 'want', 'pending', 'pre', 'transfer', 'granted', 'reason', 'id', 'part', 'done', 'records', 'agrees'] as const;
/** A `term` no tracker sends: negative, fractional, beyond 2^53, not a number, or missing. */
const badTerm = fc.oneof(fc.integer({ max: -1 }), fc.double({ noInteger: true }), fc.constant(2 ** 53), fc.string(), fc.boolean(), fc.constant(null), fc.constant(undefined));

/** A `message` that is not a cluster message at all: not JSON, another JSON value, an unknown kind or a bad term. */
const notARaftMessage = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? ''),
  fc.record({ t: fc.string({ maxLength: 12 }), term: fc.nat() }).map((m) => JSON.stringify(m)),
  fc.record({ t: fc.constantFrom(...RAFT_KINDS), term: badTerm }).map((m) => JSON.stringify(m)),
);

/**
 * A message of a known kind from a term older than `term`, its other fields of any shape: it reaches the
 * cluster's handlers. Never the current term or a later one: those would rightly depose the main.
 */
const staleRaftMessage = (term: number): fc.Arbitrary<string> =>
  fc
    .record({ t: fc.constantFrom(...RAFT_KINDS), term: fc.nat({ max: term - 1 }), fields: fc.dictionary(fc.constantFrom(...RAFT_FIELDS), fc.jsonValue({ maxDepth: 2 })) })
    .map(({ t, term, fields }) => JSON.stringify({ ...fields, t, term }));

t.test('live daemons answer random and mutated bytes only with our own errors, and healthy clients carry on', async (t) => {
  const fleet = new Fleet(t);
  // The tracker lists a rank 1 that never comes up, its key pinned to one this test holds, so a tracker
  // link can be opened to it as rank 1; alone, it takes command after failover-ms.
  const [port, ghostPort] = await reservePorts(2);
  const local = (p: number): Address => ({ host: '127.0.0.1', port: p });
  const ghost = generateKeyPair().keys;
  await fleet.startTracker({ cluster: [local(port!), { ...local(ghostPort!), id: ghost.peerId }] }, port!);
  await until('the tracker to take command alone', () => fleet.tracker.cluster.isPrimary || undefined, 10_000);
  const seeder = await fleet.startPeer('seeder');
  const healthy = await fleet.startPeer('healthy');
  const orig = path.join(fleet.dir, 'seed.bin');
  Fleet.randomFile(orig, 2);
  fs.copyFileSync(orig, path.join(seeder.shareDir, 'seed.bin'));
  await Fleet.held(healthy, 'seed.bin', 1);
  const seedId = Buffer.from((await healthy.call('search', { text: 'seed.bin' }))[0]!.id, 'hex');
  const steady = await Raw.connect(fleet.trackerAddress);
  t.teardown(() => steady.socket.destroy());
  await steady.handshake();
  // The steady client keeps its lease the way a peer daemon does: a PING every second.
  const keepAlive = setInterval(() => void steady.ping().catch(() => undefined), 1000);
  t.teardown(() => clearInterval(keepAlive));
  const baselineSessions = fleet.tracker.sessionCount;

  const stillHealthy = async (): Promise<boolean> =>
    (await healthy.call('search', { text: 'seed.bin' })).length === 1 &&
    (await steady.ping()) &&
    (await seeder.call('status', {})).tracker.state === 'connected' &&
    fleet.tracker.cluster.isPrimary;

  const tracker = fleet.trackerAddress;
  const chunkServer = seeder.daemon.chunkServer.address!;
  const control = seeder.daemon.socketPath;
  const targets: Array<[string, Address | string]> = [
    ['tracker', tracker],
    ['chunk server', chunkServer],
    ['control socket', control],
  ];
  const seen = new Map<string, Set<string>>();
  const note = (what: string, o: Outcome): void => {
    const s = seen.get(what) ?? new Set<string>();
    for (const c of codesOf(o)) s.add(c);
    seen.set(what, s);
  };
  /** One probe: connect, optionally authenticate, send, finish; throws (fails the property) on a bad outcome. */
  const probe = async (what: string, target: Address | string, data: Buffer[], login: Login = 'none'): Promise<Outcome> => {
    const raw = await Raw.connect(target, login === 'rank 1' ? ghost : undefined);
    if (login === 'peer') await raw.handshake();
    if (login === 'rank 1') await raw.trackerHandshake({ from: 1, to: 0 });
    const o = await raw.finish(data);
    const p = problem(o);
    if (p) throw new Error(`${what}: ${p}; sent ${Buffer.concat(data).toString('hex').slice(0, 400)}`);
    note(what, o);
    return o;
  };

  await t.test('raw bytes to the TLS listeners, before any TLS: closed, nothing else', async (t) => {
    const listeners: Array<[string, Address]> = [
      ['tracker', tracker],
      ['chunk server', chunkServer],
    ];
    // Random bytes, and a TLS record header followed by garbage (it reaches the TLS parser's deeper paths).
    const junk = fc.oneof(anyBytes(400), anyBytes(300).map((b) => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, b.length >> 8, b.length & 0xff]), b])));
    for (const [what, target] of listeners) {
      await fc.assert(
        fc.asyncProperty(junk, fc.array(fc.nat(), { maxLength: 6 }), async (b, cuts) => {
          const raw = await Raw.connect(target, undefined, true);
          const o = await raw.finish(pieces(b, cuts));
          if (!o.closed) throw new Error(`${what}: a plain socket that sent ${b.length} bytes was still open 3 s later`);
        }),
        { numRuns: RUNS },
      );
      t.ok(await stillHealthy(), `${what}: ${RUNS} raw byte strings before TLS; healthy clients still work`);
    }
  });

  await t.test('random bytes inside TLS, cut into random pieces', async (t) => {
    for (const [what, target] of targets) {
      await fc.assert(fc.asyncProperty(anyBytes(400), fc.array(fc.nat(), { maxLength: 6 }), async (b, cuts) => void (await probe(what, target, pieces(b, cuts)))), { numRuns: RUNS });
      t.ok(await stillHealthy(), `${what}: ${RUNS} random byte strings; healthy clients still work`);
    }
  });

  await t.test('a header with a wrong version or an unknown type is named as such', async (t) => {
    const badHeader = fc.oneof(
      // Another release's version (2-31) is P2P_VERSION; a first byte no release writes, P2P_BAD_VERSION.
      fc.tuple(fc.integer({ min: 0, max: 255 }).filter((v) => v !== 1), anyBytes(40)).map(([v, rest]) => ({ code: v >= 2 && v <= 31 ? 'P2P_VERSION' : 'P2P_BAD_VERSION', b: Buffer.concat([Buffer.from([v, 0x03]), Buffer.alloc(8), rest]) })),
      fc.tuple(fc.integer({ min: 0, max: 255 }).filter((v) => messageByCode[v] === undefined), anyBytes(40)).map(([type, rest]) => ({ code: 'P2P_UNKNOWN_MESSAGE', b: Buffer.concat([Buffer.from([1, type]), Buffer.alloc(8), rest]) })),
    );
    for (const [what, target] of targets) {
      await fc.assert(
        fc.asyncProperty(badHeader, async ({ code, b }) => {
          const o = await probe(what, target, [b]);
          if (codesOf(o).at(-1) !== code) throw new Error(`${what}: expected ${code}, got ${codesOf(o).join(', ') || 'no ERROR'}`);
        }),
        { numRuns: RUNS / 2 },
      );
      t.pass(`${what}: every bad header got the ERROR that names it`);
    }
  });

  await t.test('random bodies behind valid headers, before and after the handshake', async (t) => {
    for (const [what, target] of targets) {
      const auth = target !== control;
      await fc.assert(fc.asyncProperty(fc.array(plausibleFrame, { minLength: 1, maxLength: 4 }), async (frames) => void (await probe(what, target, frames))), { numRuns: RUNS / 2 });
      if (auth) await fc.assert(fc.asyncProperty(fc.array(plausibleFrame, { minLength: 1, maxLength: 4 }), async (frames) => void (await probe(`${what} (authenticated)`, target, frames, 'peer'))), { numRuns: RUNS / 2 });
      t.ok(await stillHealthy(), `${what}: random bodies behind valid headers; healthy clients still work`);
    }
  });

  await t.test("a tracker link that proved a member's key: malformed RAFT events and garbage frames", async (t) => {
    const what = 'tracker link (rank 1)';
    const term = fleet.tracker.cluster.term;
    await fc.assert(
      fc.asyncProperty(notARaftMessage, async (message) => {
        const o = await probe(what, tracker, [raft(message)], 'rank 1');
        if (codesOf(o).at(-1) !== 'P2P_MALFORMED') throw new Error(`expected P2P_MALFORMED, got ${codesOf(o).join(', ') || 'no ERROR'} for ${message.slice(0, 200)}`);
      }),
      { numRuns: RUNS / 2 },
    );
    t.pass('a message that is not a cluster message closes the link with P2P_MALFORMED');
    t.ok(await stillHealthy(), 'healthy clients still work');

    await fc.assert(fc.asyncProperty(fc.array(staleRaftMessage(term), { minLength: 1, maxLength: 6 }), async (messages) => void (await probe(what, tracker, messages.map(raft), 'rank 1'))), { numRuns: RUNS / 2 });
    t.ok(await stillHealthy(), 'messages of known kinds from older terms, with fields of any shape: healthy clients still work');

    const garbage = fc.oneof(
      fc.array(plausibleFrame, { minLength: 1, maxLength: 4 }),
      fc.tuple(anyBytes(400), fc.array(fc.nat(), { maxLength: 6 })).map(([b, cuts]) => pieces(b, cuts)),
      fc.tuple(staleRaftMessage(term), anyBytes(60)).map(([m, tail]) => [raft(m), tail]),
    );
    await fc.assert(fc.asyncProperty(garbage, async (data) => void (await probe(what, tracker, data, 'rank 1'))), { numRuns: RUNS / 2 });
    t.ok(await stillHealthy(), 'random frames and bytes on the link: healthy clients still work');
    t.equal(fleet.tracker.cluster.term, term, 'and the tracker is still the main, in the same term');

    // A status message passes the shape check whatever its other fields hold, and they are kept as they came.
    await probe(what, tracker, [raft(JSON.stringify({ t: 'status', term: 0, role: 7, last: null, applied: 'x', fresh: 'no', leader: 'y' }))], 'rank 1');
    const adm = await AdminClient.connect(`${tracker.host}:${tracker.port}`, ADMIN_TOKEN);
    const statusError = await adm.status().then(() => undefined, (err: Error) => err.message);
    adm.close();
    t.equal(statusError, undefined, 'ADMIN_STATUS still answers after a status message with fields of the wrong types');
  });

  await t.test('mutated valid conversations', async (t) => {
    const receipt = { publicKey: seeder.daemon.keys.publicKey, index: 0, hash: randomBytes(32), signature: randomBytes(64) };
    // Before a handshake: strangers, admins with a wrong token, and clients that claim to be a tracker.
    const preHandshake = Buffer.concat([
      enc('SEARCH', 3, { text: 'seed', limit: 5 }),
      enc('HELLO', 1, { role: Role.peer, listenPort: 7, software: 'x', link: Buffer.alloc(0) }),
      enc('HELLO', 2, { role: Role.peer, listenPort: 7, software: 'x', link: Buffer.alloc(0) }),
    ]);
    const asAdmin = Buffer.concat([
      enc('HELLO', 1, { role: Role.admin, listenPort: 0, software: 'x', link: Buffer.alloc(0) }),
      enc('ADMIN_BLACKLIST_ADD', 2, { token: 'not-the-token', target: seeder.daemon.peerId, reason: 'fuzz' }),
      enc('ADMIN_STATUS', 3, { token: 'not-the-token' }),
    ]);
    const forgedOp = JSON.stringify({ op: 'blacklist-add', entry: { target: seeder.daemon.peerId, reason: 'forged', since: 0, addedBy: 'fuzz' } });
    const asTracker = Buffer.concat([
      enc('HELLO', 1, { role: Role.tracker, listenPort: 0, software: 'x', link: encodeLinkClaim({ from: 1, to: 0 }) }),
      raft(JSON.stringify({ t: 'vote', term: 99, last: { index: 99, term: 99, epoch: 1 }, pre: false, transfer: true } satisfies RaftMessage)),
      raft(JSON.stringify({ t: 'timeout-now', term: 100 } satisfies RaftMessage)),
      raft(JSON.stringify({ t: 'append', term: 100, prev: { index: 0, term: 0, epoch: 0 }, entries: [{ index: 1, term: 100, epoch: 1, op: forgedOp }], commit: 1 } satisfies RaftMessage)),
      enc('SEARCH', 5, { text: '', limit: 5 }),
    ]);
    // After a handshake: every peer request, with plausible arguments.
    const asPeer = Buffer.concat([
      enc('SEARCH', 10, { text: 'seed', limit: 10 }),
      enc('LOOKUP', 11, { id: seedId }),
      enc('REGISTER', 12, { files: [{ id: randomBytes(32), size: 10, name: 'fuzz.txt', complete: true }] }),
      enc('BLACKLIST_CHECK', 13, { peerId: seeder.daemon.peerId, host: '127.0.0.1' }),
      enc('REPORT', 14, { fileId: seedId, reason: 'fuzz', evidence: 1, manifest: randomBytes(40), receipts: [receipt] }),
      enc('UNREGISTER', 15, { all: false, ids: [{ id: seedId }] }),
      enc('CANCEL', 0, { requestId: 12 }),
      enc('PING', 16, {}),
    ]);
    const toPeer = Buffer.concat([
      enc('GET_MANIFEST', 10, { fileId: seedId }),
      enc('GET_HAVE', 11, { fileId: seedId }),
      enc('GET_CHUNK', 12, { fileId: seedId, index: 1 }),
      enc('CANCEL', 0, { requestId: 12 }),
      enc('GET_CHUNK', 13, { fileId: seedId, index: 2 }),
    ]);
    const toControl = Buffer.concat(
      (['status', 'files', 'search', 'transfers', 'resolve', 'report', 'get', 'no-such-command'] as const).map((command, i) =>
        enc('CONTROL', 20 + i, { command, args: JSON.stringify({ text: 'seed', key: 'no-such-file.bin', reason: 'fuzz', overwrite: false }) }),
      ),
    );
    const cases: Array<[string, Address | string, Buffer, Login]> = [
      ['tracker (stranger)', tracker, preHandshake, 'none'],
      ['tracker (admin, wrong token)', tracker, asAdmin, 'none'],
      ['tracker (claims to be a tracker)', tracker, asTracker, 'none'],
      ['tracker (authenticated peer)', tracker, asPeer, 'peer'],
      ['chunk server (authenticated peer)', chunkServer, toPeer, 'peer'],
      ['control socket', control, toControl, 'none'],
    ];
    for (const [what, target, stream, login] of cases) {
      await fc.assert(
        fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 4 }), async (ms, cuts) => void (await probe(what, target, pieces(mutate(stream, ms), cuts), login))),
        { numRuns: RUNS / 2 },
      );
      t.ok(await stillHealthy(), `${what}: mutated conversations; healthy clients still work`);
    }
    const adm = await AdminClient.connect(`${tracker.host}:${tracker.port}`, ADMIN_TOKEN);
    t.same((await adm.blacklist()).entries, [], 'no fuzzed conversation managed to blacklist anyone');
    adm.close();
  });

  const classes = [...seen.entries()].map(([what, codes]) => `${what}: ${[...codes].sort().join(' ')}`);
  t.ok(seen.get('tracker')?.size, `the daemons did object, with our codes (${classes.join('; ')})`);
  t.equal(await until('fuzz sessions to be gone', () => (fleet.tracker.sessionCount === baselineSessions ? baselineSessions : undefined), 5000), baselineSessions, 'no fuzz session is left behind on the tracker');
  const out = path.join(fleet.dir, 'after-fuzz.bin');
  await healthy.call('get', { key: 'seed.bin', out, overwrite: false });
  t.ok(fs.readFileSync(out).equals(fs.readFileSync(orig)), 'after all that, a real download from the fuzzed seeder is intact');
});
