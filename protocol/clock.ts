/**
 * One injectable source of time. Timeouts use the monotonic `now()`, never the wall clock, so a clock step
 * cannot fire or stall them; tests pass a virtual clock and advance it instead of sleeping.
 */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Wall-clock milliseconds since the epoch, for timestamps that users read. */
  wallNow(): number;
  setTimeout(fn: () => void, ms: number): Timer;
  setInterval(fn: () => void, ms: number): Timer;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return { cancel: () => clearTimeout(t) };
  },
  setInterval(fn, ms) {
    const t = setInterval(fn, ms);
    t.unref?.();
    return { cancel: () => clearInterval(t) };
  },
};

/**
 * Runs `fn` once this turn of the event loop has read its sockets (setImmediate runs after the poll phase).
 * For a timeout's callback: after a stall of our own event loop (a busy host, a long collection) Node runs
 * the expired timers before it reads the sockets, so what the timer gave up on can be waiting unread; `fn`
 * looks again whether it is still owed. A peer whose loop stalls two seconds kept timing out HELLOs whose
 * WELCOME had arrived, and dialled again (issue 12).
 */
export function afterPendingReads(fn: () => void): void {
  setImmediate(fn);
}

/** A deadline on `clock` whose `fn` runs after that turn's reads (afterPendingReads): `fn` checks it is still owed. */
export function setDeadline(clock: Clock, fn: () => void, ms: number): Timer {
  return clock.setTimeout(() => afterPendingReads(fn), ms);
}

/** A clock that moves only when told to: for tests of heartbeats, leases and takeovers. */
export class VirtualClock implements Clock {
  private current = 0;
  private wallBase = Date.now();
  private timers: Array<{ at: number; fn: () => void; every?: number; id: number }> = [];
  private nextId = 1;

  now(): number {
    return this.current;
  }
  wallNow(): number {
    return this.wallBase + this.current;
  }
  setTimeout(fn: () => void, ms: number): Timer {
    const id = this.nextId++;
    this.timers.push({ at: this.current + ms, fn, id });
    return { cancel: () => this.remove(id) };
  }
  setInterval(fn: () => void, ms: number): Timer {
    const id = this.nextId++;
    this.timers.push({ at: this.current + ms, fn, every: Math.max(1, ms), id });
    return { cancel: () => this.remove(id) };
  }
  /** Moves time forward, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (!next || next.at > target) break;
      this.current = next.at;
      if (next.every) next.at += next.every;
      else this.timers.shift();
      next.fn();
    }
    this.current = target;
  }
  private remove(id: number): void {
    this.timers = this.timers.filter((t) => t.id !== id);
  }
}
