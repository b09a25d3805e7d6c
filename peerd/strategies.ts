/**
 * How a download chooses its peers, one object per strategy, chosen from `STRATEGIES` by name:
 *
 * - 'adaptive' (the default): starts with the first holders to answer (up to 10, the rest wait as spares),
 *   then every 250 ms adds spares while they still raise the rate, slows down or drops peers far behind the
 *   others, and asks the tracker again for new holders every 2 s.
 * - 'original': the original design's rule, measure every holder and keep them all while at most 5 hold
 *   the file, beyond that the fastest half (`choosePeerCount`).
 *
 * A strategy sees the download only through `Swarm`, so it never touches requests, chunks or the file.
 */
import type { Logger } from 'pino';
import { isStrategyName, type Clock, type StrategyName } from '../protocol/index.js';
import type { Holder, Source } from './source.js';
import type { DropReason } from './counters.js';

/** What a strategy may see of a download and do to it. */
export interface Swarm {
  readonly logger: Logger;
  readonly clock: Pick<Clock, 'now' | 'setTimeout' | 'setInterval'>;
  /** --max-peers, when given. */
  readonly maxPeers: number | undefined;
  /** Sources in use and alive. */
  alive(): Source[];
  spareCount(): number;
  /**
   * Dials and measures a holder (undefined when it cannot be used). With `probeLater` it is ready after the
   * handshake, its round-trip time refined in the background (see connectSource).
   */
  measure(h: Holder, opts?: { probeLater?: boolean }): Promise<Source | undefined>;
  /** Starts fetching from a measured holder (closes it instead when the download is over). */
  use(s: Source): void;
  /** Keeps a measured holder for later, the fastest first (closes it instead when the download is over). */
  keepSpare(s: Source): void;
  /** Starts fetching from the `n` fastest spares. */
  useSpares(n: number): void;
  /** Closes a measured holder that is not wanted. */
  discard(s: Source): void;
  /** Stops using a source; its chunks in flight go to the others. */
  drop(s: Source, reason: DropReason, why: string): void;
  /** Withdraws a source's requests in flight (their chunks go to the rest) and keeps it to one at a time, no endgame copies. Returns how many were withdrawn. */
  shed(s: Source): number;
  /** Asks idle partial holders what they have now. */
  refreshIdleHaves(): void;
  /** Asks the tracker for holders again and brings the new ones in through `connect`. */
  relookup(): Promise<void>;
  /**
   * Since when the download has kept up with what it receives (chunks waiting to be checked and written
   * below their cap); undefined while it has not. Silence in the meantime is its own doing, not a source's.
   */
  keepingUpSince(): number | undefined;
  /** Bytes received in this run (not counting what a resumed download already had). */
  bytesFetched(): number;
  chunksLeft(): number;
}

export interface PeerStrategy {
  /** Brings the holders of one tracker answer into the download; resolves when the download may start. */
  connect(holders: Holder[]): Promise<void>;
  /** Chunks start being fetched. */
  start(): void;
  /** Milliseconds between calls of onTick while chunks are fetched; 0: never. */
  readonly tickMs: number;
  onTick(): void;
}

/** One implementation per name of the catalogue (protocol/messages.ts, STRATEGY_NAMES). */
export const STRATEGIES: Readonly<Record<StrategyName, (swarm: Swarm) => PeerStrategy>> = {
  adaptive: (swarm) => new AdaptiveStrategy(swarm),
  original: (swarm) => new OriginalStrategy(swarm),
};

export type Strategy = StrategyName;
export const isStrategy = isStrategyName;

/** The original design's rule: every holder while at most 5 hold the file, beyond that the fastest half. */
export function choosePeerCount(holders: number, maxPeers?: number): number {
  if (maxPeers !== undefined && maxPeers > 0) return Math.min(holders, maxPeers);
  return holders <= 5 ? holders : Math.ceil(holders / 2);
}

/** Holders dialled at once from one tracker answer, at most. */
const MAX_DIALS = 256;
/** Adaptive strategy: holders dialled at once (the next starts as one is done). */
const DIALS_AT_ONCE = 4;
const DIAL_STAGGER_MS = 10;
/** Adaptive strategy: peers to start with, and how often the set is reconsidered. */
const ADAPTIVE_INITIAL_PEERS = 10;
const ADAPTIVE_TICK_MS = 250;
/** After the first holder answers, how long to wait for others before starting. */
const START_GRACE_MS = 10;
/** While downloading, how often the tracker is asked again for new (partial) holders. */
const RELOOKUP_MS = 2000;
/** A source that delivers nothing for this long (and ten of the others' chunk times) while they deliver is cut to one request. */
const STUCK_MS = 3000;

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)]! : 0;
}

/**
 * The original rule ranks every holder by round-trip time, so it waits to have measured them all, then
 * uses as many as `choosePeerCount` allows and closes the rest.
 */
async function measureAllThenChoose(swarm: Swarm, holders: Holder[]): Promise<void> {
  const measured = (await Promise.all(holders.slice(0, MAX_DIALS).map((h) => swarm.measure(h)))).filter((s): s is Source => s !== undefined);
  // Fastest first; a complete holder is preferred over a partial one only when it is as fast.
  measured.sort((a, b) => a.rttMs - b.rttMs || Number(b.complete) - Number(a.complete));
  const alive = swarm.alive().length;
  const want = Math.max(0, choosePeerCount(alive + measured.length, swarm.maxPeers) - alive);
  for (const s of measured.slice(0, want)) swarm.use(s);
  for (const s of measured.slice(want)) swarm.discard(s);
}

class OriginalStrategy implements PeerStrategy {
  readonly tickMs = 0;
  constructor(private readonly swarm: Swarm) {}

  connect(holders: Holder[]): Promise<void> {
    return measureAllThenChoose(this.swarm, holders);
  }

  start(): void {}

  onTick(): void {}
}

class AdaptiveStrategy implements PeerStrategy {
  readonly tickMs = ADAPTIVE_TICK_MS;
  private lastTickBytes = 0;
  private lastTickAt: number;
  private lastAddRate = 0;
  private lastLookupAt: number;
  private lookingUp = false;

  constructor(private readonly swarm: Swarm) {
    this.lastTickAt = swarm.clock.now();
    this.lastLookupAt = swarm.clock.now();
  }

  /**
   * Starts as soon as the first holders answer (a far-away or slow one must not delay the start); the rest
   * join as they are measured, up to the initial count, then wait as spares. With --max-peers the
   * original rule's count applies, so every holder is measured first.
   */
  async connect(holders: Holder[]): Promise<void> {
    if (this.swarm.maxPeers) return measureAllThenChoose(this.swarm, holders);
    await new Promise<void>((resolve) => {
      let pending = Math.min(holders.length, MAX_DIALS);
      let settled = false;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        resolve();
      };
      if (pending === 0) return finish();
      // A few at a time: twenty TLS handshakes at once share the CPU, so all finished late and the first
      // chunk waited for the last; a few at once finish early, and the rest join while chunks flow. One
      // more starts every DIAL_STAGGER_MS all the same, so far holders (slow round trips) hold up no one.
      const queue = holders.slice(0, MAX_DIALS);
      const stagger = this.swarm.clock.setInterval(() => next(), DIAL_STAGGER_MS);
      const next = (): void => {
        const h = queue.shift();
        if (queue.length === 0) stagger.cancel();
        if (!h) return;
        // Used at once, so ready after the handshake: its PING would cost a far holder another round trip.
        void this.swarm.measure(h, { probeLater: true }).then((s) => {
          pending--;
          if (s) {
            this.admit(s);
            if (!settled) this.swarm.clock.setTimeout(finish, START_GRACE_MS);
          }
          if (pending === 0) finish();
          next();
        });
      };
      for (let i = 0; i < DIALS_AT_ONCE; i++) next();
    });
  }

  start(): void {
    this.lastTickAt = this.swarm.clock.now();
    this.lastTickBytes = this.swarm.bytesFetched();
  }

  /**
   * Every ADAPTIVE_TICK_MS: add spare peers while more peers still bring more speed (the download is
   * limited by the peers, not by our link), and drop peers that fall far behind (a mean chunk time over
   * 20 times the others', or beyond their mean + 3 standard deviations).
   */
  onTick(): void {
    const swarm = this.swarm;
    const now = swarm.clock.now();
    const fetched = swarm.bytesFetched();
    const rate = ((fetched - this.lastTickBytes) * 1000) / Math.max(1, now - this.lastTickAt);
    this.lastTickBytes = fetched;
    this.lastTickAt = now;
    // Partial holders fill in over time: ask idle ones what they have now (a busy one is asked as it asks).
    swarm.refreshIdleHaves();
    // New holders appear while we run (in a flash crowd, every other downloader): look again now and then.
    if (now - this.lastLookupAt > RELOOKUP_MS && !this.lookingUp) {
      this.lastLookupAt = now;
      this.lookingUp = true;
      void swarm.relookup().finally(() => {
        this.lookingUp = false;
      });
    }
    this.shedStuck();
    this.reweigh();
    if (swarm.spareCount() === 0 || swarm.chunksLeft() < 4) return;
    // Keep adding while the last addition raised the rate by at least 5%.
    if (this.lastAddRate === 0 || rate > this.lastAddRate * 1.05) {
      this.lastAddRate = rate;
      swarm.useSpares(2);
    }
  }

  /** A newly measured holder: used at once while fewer than the initial count are, otherwise a spare. */
  private admit(s: Source): void {
    if (this.swarm.alive().length < ADAPTIVE_INITIAL_PEERS) this.swarm.use(s);
    else this.swarm.keepSpare(s);
  }

  /**
   * A source that has had requests in flight and delivered nothing for STUCK_MS (and ten of the others'
   * typical chunk times) while others delivered loses them to the rest, and from then on gets one at a
   * time and no endgame copies. `reweigh` judges only sources that delivered; without this, peers that take
   * requests and then barely send (nine at 16 KiB/s in a test) held a download up until each request
   * timed out, a minute later. Such a source is not dropped: it may be a busy seeder in a flash crowd,
   * the only one with some chunks. Time in which this side was behind (its disk) counts against no one.
   */
  private shedStuck(): void {
    const swarm = this.swarm;
    const keepingUp = swarm.keepingUpSince();
    if (keepingUp === undefined) return;
    const now = swarm.clock.now();
    const alive = swarm.alive();
    const delivering = alive.filter((s) => s.chunks > 0);
    if (delivering.length === 0) return;
    const typical = median(delivering.map((s) => mean(s.chunkMs.slice(-8))));
    const limit = Math.max(STUCK_MS, 10 * typical);
    // Silence counts from the last delivery, or from when an idle source was asked again.
    const latest = Math.max(...delivering.map((s) => s.deliveredAt));
    for (const s of alive) {
      const silentMs = now - Math.max(s.startedAt, s.deliveredAt, s.busySince, keepingUp);
      if (s.inFlight.size === 0 || silentMs <= limit || s.deliveredAt === latest) continue;
      const withdrawn = swarm.shed(s);
      if (withdrawn > 0) swarm.logger.info({ peer: s.address, silentMs: Math.round(silentMs), chunkMs: Math.round(typical), withdrawn }, 'peer delivers nothing while the others do; its other chunks go to them');
    }
  }

  private reweigh(): void {
    const measured = this.swarm.alive().filter((s) => s.chunkMs.length >= 3);
    if (measured.length < 4) return;
    for (const s of measured) {
      const others = measured.filter((o) => o !== s).map((o) => mean(o.chunkMs));
      const m = mean(others);
      const sd = Math.sqrt(mean(others.map((x) => (x - m) ** 2)));
      const mine = mean(s.chunkMs.slice(-8));
      if (mine > 20 * m) {
        this.swarm.logger.info({ peer: s.address, chunkMs: Math.round(mine), meanMs: Math.round(m) }, 'peer far behind the others; dropping it');
        this.swarm.drop(s, 'slow', 'far slower than the others');
      } else if (sd > 0 && mine > m + 3 * sd && mine > 2 * m) {
        // Behind, but not hopeless: one request at a time, so it cannot hold many chunks back.
        s.deweighted = true;
        s.depth = 1;
      } else {
        s.deweighted = false;
      }
    }
  }
}
