/**
 * The most peers this tracker has seen at once lately, kept in its --data so that it outlives a restart.
 *
 * A tracker tells each peer its heartbeat lease once, in WELCOME, from the size of the fleet at that moment
 * (Tracker.heartbeatLeaseMs). When a whole fleet dials in at once, after a restart of the cluster, the first
 * peers would otherwise be told the lease of a small fleet and ping every 300 ms for as long as their
 * session lasts: at 20,000 peers and the default 3,000 PINGs a second, the first 900 of them alone would
 * send 3,000. With the peak, the fleet of yesterday is expected back at once. A peak is forgotten a day
 * after it was last seen, so a fleet that shrank for good gets its faster heartbeats back.
 */
import type { Clock } from '../protocol/clock.js';
import type { Store } from './store.js';

/** A peak not seen again for this long no longer counts. */
export const FLEET_PEAK_TTL_MS = 24 * 3600_000;
/** While the peak stands, it is written again this often, so that it stays fresh on disk too. */
const REFRESH_EVERY_MS = 60_000;
/** A growing fleet moves the peak in memory at once, and on disk at most this often (a write is an fsync). */
const GROWTH_WRITE_EVERY_MS = 1000;

export class FleetPeak {
  private peak: number;
  /** When the peak was last seen (reached again, or nearly: within a tenth), in wall-clock ms (kept on disk). */
  private seenAt: number;
  private written: number;
  /** When it was last written, on the monotonic clock (writes are spaced by it). */
  private writtenAt = -Infinity;

  constructor(
    private readonly store: Pick<Store, 'getMeta' | 'setMeta' | 'transaction'>,
    private readonly clock: Pick<Clock, 'now' | 'wallNow'>,
  ) {
    const peak = Number(store.getMeta('fleet_peak') ?? 0);
    // A time ahead of this clock (it was set back, or the value is bad) counts as now: never beyond a day.
    const seenAt = Math.min(Number(store.getMeta('fleet_peak_at') ?? 0), clock.wallNow());
    const fresh = Number.isFinite(peak) && peak > 0 && clock.wallNow() - seenAt < FLEET_PEAK_TTL_MS;
    this.peak = fresh ? peak : 0;
    this.seenAt = fresh ? seenAt : -Infinity;
    this.written = this.peak;
  }

  /** The peers to expect, given `now` counted here: `now`, or the recent peak where that is more. */
  expected(now: number): number {
    const wall = this.clock.wallNow();
    if (wall - this.seenAt >= FLEET_PEAK_TTL_MS) this.peak = 0;
    if (now >= this.peak * 0.9) {
      this.peak = Math.max(this.peak, now);
      this.seenAt = wall;
      const since = this.clock.now() - this.writtenAt;
      if (this.peak > 0 && (since >= REFRESH_EVERY_MS || (since >= GROWTH_WRITE_EVERY_MS && this.peak > this.written * 1.25))) this.write();
    }
    return Math.max(now, this.peak);
  }

  /** Writes a peak not yet on disk (when the tracker stops; a growing fleet's is written at most once a second). */
  flush(): void {
    if (this.peak > this.written) this.write();
  }

  private write(): void {
    this.store.transaction(() => {
      this.store.setMeta('fleet_peak', this.peak);
      this.store.setMeta('fleet_peak_at', this.seenAt);
    });
    this.written = this.peak;
    this.writtenAt = this.clock.now();
  }
}
