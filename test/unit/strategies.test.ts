/**
 * How the adaptive strategy brings a tracker answer's holders in (peerd/strategies.ts): a few dials at
 * once and one more every 10 ms, so the first sources are ready before twenty TLS handshakes have shared
 * the CPU, and a far holder holds up no one. A fake swarm whose dials finish when the test says, on a
 * virtual clock.
 */
import t from 'tap';
import pino from 'pino';
import { VirtualClock } from '../../protocol/index.js';
import type { Holder, Source } from '../../peerd/source.js';
import { STRATEGIES, type Swarm } from '../../peerd/strategies.js';

interface Dial {
  holder: Holder;
  startedAt: number;
  /** Ready after the handshake, its round trip probed in the background (connectSource's probeLater). */
  probeLater: boolean;
  finish(ok: boolean): void;
}

function holder(i: number): Holder {
  return { peerId: i.toString(16).padStart(40, '0'), publicKey: Buffer.alloc(32, i), host: '10.0.0.1', port: 4000 + i, complete: true };
}

function fakeSwarm(clock: VirtualClock): { swarm: Swarm; dials: Dial[]; used: Source[]; spares: Source[] } {
  const dials: Dial[] = [];
  const used: Source[] = [];
  const spares: Source[] = [];
  const swarm = {
    logger: pino({ level: 'silent' }),
    clock,
    maxPeers: undefined,
    alive: () => used,
    spareCount: () => spares.length,
    measure: (h: Holder, opts?: { probeLater?: boolean }) =>
      new Promise<Source | undefined>((resolve) => {
        dials.push({ holder: h, startedAt: clock.now(), probeLater: opts?.probeLater ?? false, finish: (ok) => resolve(ok ? ({ peerId: h.peerId, rttMs: 1 } as Source) : undefined) });
      }),
    use: (s: Source) => used.push(s),
    keepSpare: (s: Source) => spares.push(s),
  } as unknown as Swarm;
  return { swarm, dials, used, spares };
}

/** Lets promise callbacks run (a dial's result reaches the strategy through one). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('four holders are dialled at once, the next as one finishes, and one more every 10 ms meanwhile', async (t) => {
  const clock = new VirtualClock();
  const { swarm, dials, used, spares } = fakeSwarm(clock);
  let started = false;
  const connecting = STRATEGIES.adaptive(swarm)
    .connect(Array.from({ length: 20 }, (_, i) => holder(i)))
    .then(() => (started = true));
  t.equal(dials.length, 4, 'four dials at first, not twenty');

  dials[0]!.finish(true);
  await settle();
  t.equal(dials.length, 5, 'a finished dial starts the next');
  t.same(used.map((s) => s.peerId), [holder(0).peerId], 'and its holder is used at once');

  t.notOk(started, 'the download waits a moment for more holders to answer');

  clock.advance(10);
  t.equal(dials.length, 6, 'ten milliseconds on, one more starts although none finished');
  await settle();
  t.ok(started, 'and the download starts with what it has (10 ms after the first answer)');
  await connecting;

  // The rest still come in: slow ones hold up no one, since the stagger keeps dialling.
  for (let i = 0; i < 20; i++) clock.advance(10);
  t.equal(dials.length, 20, 'every holder is dialled within 200 ms, none of them finished');
  t.same(
    dials.map((d) => d.holder.peerId),
    Array.from({ length: 20 }, (_, i) => holder(i).peerId),
    'in the order the tracker gave',
  );
  for (const d of dials.slice(1)) d.finish(true);
  await settle();
  t.equal(used.length, 10, 'the first ten to answer are used');
  t.equal(spares.length, 10, 'the others wait as spares');
});

t.test('a holder that cannot be dialled is passed over, and the dialling ends with the list', async (t) => {
  const clock = new VirtualClock();
  const { swarm, dials, used } = fakeSwarm(clock);
  const connecting = STRATEGIES.adaptive(swarm).connect([holder(1), holder(2)]);
  t.equal(dials.length, 2, 'both dialled at once (fewer than four)');
  dials[0]!.finish(false);
  dials[1]!.finish(false);
  await connecting;
  t.same(used, [], 'nothing usable');
  clock.advance(1000);
  t.equal(dials.length, 2, 'and nothing more is dialled');
});

t.test('adaptive takes a holder as soon as its handshake is done; the original rule waits for every round trip, which it ranks by', async (t) => {
  const clock = new VirtualClock();
  const adaptive = fakeSwarm(clock);
  void STRATEGIES.adaptive(adaptive.swarm).connect([holder(1), holder(2)]);
  t.same(adaptive.dials.map((d) => d.probeLater), [true, true], 'adaptive: the round-trip probe does not hold a holder back (a far one saves a round trip)');
  for (const d of adaptive.dials) d.finish(true);

  const original = fakeSwarm(clock);
  const done = STRATEGIES.original(original.swarm).connect([holder(1), holder(2)]);
  t.same(original.dials.map((d) => d.probeLater), [false, false], 'original: each holder is measured before any is chosen');
  for (const d of original.dials) d.finish(true);
  await done;
});
