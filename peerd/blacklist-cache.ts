/**
 * What this peer knows of the blacklist: entries the tracker pushed (BLACKLIST_CHANGED) plus verdicts
 * asked of the tracker for peers met, cached briefly with lru-cache. If the tracker cannot be asked, the
 * pushed entries still apply and the peer is let through (a tracker outage must not stop transfers).
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Body } from '../protocol/index.js';
import type { TrackerClient } from './tracker-client.js';

export class BlacklistCache {
  private readonly pushed = new Set<string>();
  private readonly verdicts: LRUCache<string, boolean>;

  constructor(
    private readonly tracker: TrackerClient,
    private readonly log: Logger,
    ttlMs = 30_000,
  ) {
    this.verdicts = new LRUCache({ max: 10_000, ttl: ttlMs });
    tracker.on('blacklist', (change: Body<'BLACKLIST_CHANGED'>) => this.apply(change));
  }

  apply(change: Body<'BLACKLIST_CHANGED'>): void {
    for (const { target } of change.added) this.pushed.add(target);
    for (const { target } of change.removed) this.pushed.delete(target);
    // Any cached verdict may be stale now.
    this.verdicts.clear();
  }

  /** Known bad from pushes alone (no network). */
  knownBanned(peerId: string, host: string): boolean {
    return this.pushed.has(peerId) || this.pushed.has(host);
  }

  async isBanned(peerId: string, host: string): Promise<boolean> {
    if (this.knownBanned(peerId, host)) return true;
    const key = `${peerId}@${host}`;
    const cached = this.verdicts.get(key);
    if (cached !== undefined) return cached;
    try {
      const v = await this.tracker.request('BLACKLIST_CHECK', { peerId, host }, 'BLACKLIST_VERDICT', 1);
      this.verdicts.set(key, v.banned);
      return v.banned;
    } catch (err) {
      this.log.warn({ peerId, host, err: (err as Error).message }, 'cannot ask the tracker about a peer; using pushed entries only');
      return false;
    }
  }
}
