/**
 * What this peer knows of the blacklist: the tracker's list of targets, kept current by its pushes
 * (BLACKLIST_CHANGED) and re-synced by version on every (re)connection (BLACKLIST_SYNC), so a change
 * pushed while this peer had no session (failing over, a cut link) is not lost until a restart; plus
 * verdicts asked of the tracker for peers met, cached briefly with lru-cache, while that list may be behind
 * (no session, or one not yet re-synced). Once the list is synced in the current session it is the
 * tracker's own, kept current by its pushes, and a peer met is judged by it alone: asking would cost each
 * new downloader a round trip to the tracker on every holder it dials, and would know nothing more (a ban
 * applied after either answer arrives as a push, which cuts the peer's connections). Without a session,
 * or if the tracker cannot be asked, the known entries still apply and the peer is let through (a tracker
 * outage must not stop transfers). Every change, pushed or re-synced, is emitted as 'change'
 * ({ added, removed }): the daemon cuts the connections of a peer just banned either way.
 *
 * The list is kept in the peer database too, so a restarted daemon enforces it from its first moment, and
 * its re-sync costs nothing when nothing changed: BLACKLIST_SYNC sends the digest of the list held
 * (protocol/blacklist-target.ts), and a tracker whose list has that digest answers 'unchanged' instead of
 * sending every entry (4.2 MB at 100,000 entries). A tracker of an older release, whose versions are not
 * digests, always sends the whole list, as it did. The copy belongs to no cluster in particular: pointed
 * at another cluster (or after running release 0.1 on this --data, which leaves the copy as it was), the
 * peer enforces the old list until the first tracker answers, and the whole new list replaces it then.
 */
import { EventEmitter } from 'node:events';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { blacklistDigest, normalizeHostForMatch, type Body } from '../protocol/index.js';
import type { PeerDb } from './db.js';
import type { TrackerClient } from './tracker-client.js';

/** Re-syncs asked in a row when pushes keep arriving during the answer's round trip. */
const SYNC_ATTEMPTS = 3;

export type BlacklistChange = Body<'BLACKLIST_CHANGED'>;

export interface BlacklistCacheOptions {
  /** How long a verdict asked of the tracker is kept (default 30 s). */
  ttlMs?: number;
  /** Where the list is kept across restarts (the peer database); without it, a restart starts empty. */
  copy?: Pick<PeerDb, 'blacklistCopy' | 'changeBlacklistCopy' | 'replaceBlacklistCopy'>;
}

export class BlacklistCache extends EventEmitter {
  private readonly known = new Set<string>();
  private readonly verdicts: LRUCache<string, boolean>;
  /** The tracker's version of the list `known` was last synced to ('' before the first sync). */
  private version = '';
  /** Pushes applied so far: a sync answer that crossed a push is stale and asked again. */
  private pushes = 0;
  private syncing: Promise<void> | undefined;
  private syncAgain = false;
  /** Whether `known` is the tracker's list: synced in the current session, which has not ended since. */
  private current = false;
  /** The digest of `known` (blacklistDigest), while it has not changed since. */
  private digest: string | undefined;
  /** A change failed to reach the copy: it is written whole at the next sync. */
  private copyStale = false;
  private readonly copy: BlacklistCacheOptions['copy'];

  constructor(
    private readonly tracker: TrackerClient,
    private readonly log: Logger,
    { ttlMs = 30_000, copy }: BlacklistCacheOptions = {},
  ) {
    super();
    this.verdicts = new LRUCache({ max: 10_000, ttl: ttlMs });
    this.copy = copy;
    // The list as it was when this daemon last ran: in force from the start, before any tracker answers
    // (a restart during a tracker outage must not let banned peers in), and, when the tracker's list is
    // still the same, all that a re-sync needs (its digest matches: nothing is sent).
    for (const target of copy?.blacklistCopy() ?? []) this.known.add(target);
    if (this.known.size > 0) log.info({ entries: this.known.size }, 'blacklist as last known, in force until the tracker is asked');
    tracker.on('blacklist', (change: BlacklistChange) => {
      this.pushes++;
      log.info({ added: change.added.length, removed: change.removed.length }, 'blacklist change pushed by the tracker');
      this.apply(change);
    });
    tracker.on('state', (to: string) => {
      if (to !== 'connected') this.current = false;
    });
    tracker.on('session', () => {
      this.current = false;
      this.sync().catch((err: unknown) => {
        this.log.warn({ err: (err as Error).message }, 'could not re-sync the blacklist with the tracker; pushes and checks still apply');
      });
    });
  }

  /** Whether a peer met is judged by the known list alone (synced in this session); else the tracker is asked. */
  get listIsCurrent(): boolean {
    return this.current;
  }

  /** The version of the tracker's list this peer last synced to. */
  get syncedVersion(): string {
    return this.version;
  }

  apply(change: BlacklistChange): void {
    const added = change.added.filter(({ target }) => !this.known.has(target));
    const removed = change.removed.filter(({ target }) => this.known.has(target));
    for (const { target } of added) this.known.add(target);
    for (const { target } of removed) this.known.delete(target);
    // Any cached verdict may be stale now.
    this.verdicts.clear();
    if (added.length === 0 && removed.length === 0) return;
    this.digest = undefined;
    try {
      this.copy?.changeBlacklistCopy(
        added.map((a) => a.target),
        removed.map((r) => r.target),
      );
    } catch (err) {
      // The list in memory still applies; the copy is written whole at the next sync.
      this.copyStale = true;
      this.log.warn({ err: (err as Error).message }, 'cannot keep the blacklist copy in the peer database; it is written whole at the next sync');
    }
    this.emit('change', { added, removed });
  }

  private rewriteCopy(): void {
    try {
      this.copy?.replaceBlacklistCopy(this.known);
      this.copyStale = false;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot write the blacklist copy in the peer database; trying again at the next sync');
    }
  }

  /** What this peer holds, as BLACKLIST_SYNC's version: the digest of its list (see blacklistDigest). */
  private heldVersion(): string {
    return (this.digest ??= blacklistDigest([...this.known].sort()));
  }

  /**
   * Asks the tracker whether its list changed since the version held, and takes the whole list when it
   * did. A sync asked while one runs runs again after it (the newer session may be another tracker's).
   */
  sync(): Promise<void> {
    if (this.syncing) {
      this.syncAgain = true;
      return this.syncing;
    }
    this.syncing = (async () => {
      try {
        let synced: boolean;
        do {
          this.syncAgain = false;
          synced = await this.syncOnce();
        } while (this.syncAgain);
        // A session that ended meanwhile said so ('state'), and its successor asks for another sync.
        this.current = synced && this.tracker.state === 'connected';
      } finally {
        this.syncing = undefined;
      }
    })();
    return this.syncing;
  }

  /** True once `known` is the tracker's whole list; false if pushes kept crossing the answers. */
  private async syncOnce(): Promise<boolean> {
    for (let attempt = 0; attempt < SYNC_ATTEMPTS; attempt++) {
      const pushesBefore = this.pushes;
      const state = await this.tracker.request('BLACKLIST_SYNC', { version: this.heldVersion() }, 'BLACKLIST_STATE', 3);
      // A push that arrived meanwhile may be newer than the answer: ask again rather than undo it.
      if (this.pushes !== pushesBefore) continue;
      if (state.changed) {
        const targets = new Set(state.targets.map((t) => t.target));
        const change: BlacklistChange = {
          added: [...targets].filter((t) => !this.known.has(t)).map((target) => ({ target })),
          removed: [...this.known].filter((t) => !targets.has(t)).map((target) => ({ target })),
        };
        if (change.added.length > 0 || change.removed.length > 0) {
          this.log.info({ added: change.added.length, removed: change.removed.length, version: state.version }, 'blacklist re-synced: changes missed while away');
        }
        this.apply(change);
      }
      this.version = state.version;
      if (this.copyStale) this.rewriteCopy();
      return true;
    }
    this.log.info('blacklist pushes kept crossing the re-sync; keeping what the pushes said');
    return false;
  }

  /** Known bad from the tracker's list alone (no network). */
  knownBanned(peerId: string, host: string): boolean {
    return this.known.has(peerId) || this.known.has(normalizeHostForMatch(host));
  }

  async isBanned(peerId: string, host: string): Promise<boolean> {
    if (this.knownBanned(peerId, host)) return true;
    // Synced in this session: the list is the tracker's. No session: nobody to ask, and waiting for one
    // would hold the peer's handshake past its deadline; the known entries decide.
    if (this.current || this.tracker.state !== 'connected') return false;
    const key = `${peerId}@${host}`;
    const cached = this.verdicts.get(key);
    if (cached !== undefined) return cached;
    try {
      const v = await this.tracker.request('BLACKLIST_CHECK', { peerId, host }, 'BLACKLIST_VERDICT', 1);
      this.verdicts.set(key, v.banned);
      return v.banned;
    } catch (err) {
      this.log.warn({ peerId, host, err: (err as Error).message }, 'cannot ask the tracker about a peer; using known entries only');
      return false;
    }
  }
}
