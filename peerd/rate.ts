/**
 * Token buckets for --max-upload-rate / --max-download-rate, and rate meters for `p2p status`. Both read
 * time from the daemon's clock (monotonic), so a test can drive them on a virtual one.
 */
import { systemClock, type Clock } from '../protocol/clock.js';
import { P2PError } from '../protocol/errors.js';

/** A token bucket in bytes: `take(n)` resolves when n bytes may pass. Waiters are served in order. */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private queue: Promise<void> = Promise.resolve();
  /** Takes that had to sleep for tokens, and how long they waited in all, from take() to the grant (for --metrics). */
  waits = 0;
  waitedMs = 0;

  constructor(
    readonly bytesPerSec: number,
    private readonly clock: Pick<Clock, 'now' | 'setTimeout'> = systemClock,
    private readonly burstBytes = Math.max(bytesPerSec / 4, 64 * 1024),
  ) {
    this.tokens = this.burstBytes;
    this.last = clock.now();
  }

  private refill(): void {
    const now = this.clock.now();
    this.tokens = Math.min(this.burstBytes, this.tokens + ((now - this.last) / 1000) * this.bytesPerSec);
    this.last = now;
  }

  take(n: number): Promise<void> {
    const askedAt = this.clock.now();
    const run = this.queue.then(async () => {
      this.refill();
      // A request larger than the burst may go once the bucket is full, leaving it in debt.
      const need = Math.min(n, this.burstBytes);
      if (this.tokens < need) {
        while (this.tokens < need) {
          await new Promise<void>((r) => this.clock.setTimeout(r, Math.max(1, ((need - this.tokens) / this.bytesPerSec) * 1000)));
          this.refill();
        }
        this.waits++;
        this.waitedMs += this.clock.now() - askedAt;
      }
      this.tokens -= n;
    });
    this.queue = run;
    return run;
  }
}

/** Bytes per second over a sliding window of about `windowMs`. */
export class RateMeter {
  private readonly slots: number[];
  private readonly slotMs: number;
  private slotStart: number;
  private index = 0;
  total = 0;

  constructor(
    private readonly clock: Pick<Clock, 'now'> = systemClock,
    windowMs = 3000,
    slots = 6,
  ) {
    this.slots = new Array<number>(slots).fill(0);
    this.slotMs = windowMs / slots;
    this.slotStart = Math.floor(clock.now());
  }

  private advance(): void {
    const now = this.clock.now();
    let steps = Math.floor((now - this.slotStart) / this.slotMs);
    if (steps <= 0) return;
    this.slotStart += steps * this.slotMs;
    steps = Math.min(steps, this.slots.length);
    for (let i = 0; i < steps; i++) {
      this.index = (this.index + 1) % this.slots.length;
      this.slots[this.index] = 0;
    }
  }

  add(bytes: number): void {
    this.advance();
    this.slots[this.index]! += bytes;
    this.total += bytes;
  }

  get bytesPerSec(): number {
    this.advance();
    const sum = this.slots.reduce((a, b) => a + b, 0) - this.slots[this.index]!;
    return Math.round(sum / (((this.slots.length - 1) * this.slotMs) / 1000));
  }
}

/** Parses a rate like "10M", "500k", "1.5G", "100mbit" into bytes per second (0 = unlimited). */
export function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(i?b?|bit)?(\/s)?$/i.exec(text.trim());
  if (!m) throw new P2PError('P2P_BAD_REQUEST', `'${text}' is not a rate (examples: 500k, 10M, 1.5G bytes per second, or 100mbit)`);
  const prefix = m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g';
  // Bits are SI (100mbit = 100e6 bit/s, as tc counts them); bytes are binary (10M = 10 MiB/s).
  const value = m[3]?.toLowerCase() === 'bit' ? (Number(m[1]) * { '': 1, k: 1e3, m: 1e6, g: 1e9 }[prefix]) / 8 : Number(m[1]) * { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[prefix];
  return Math.floor(value);
}
