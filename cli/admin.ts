/**
 * `p2p admin`: talks to a tracker directly, in TLS, presenting the admin token on every request. Before
 * the token leaves, the tracker proves that it knows the token too, for this TLS session only
 * (protocol/identity.ts, adminProof): an impostor at the tracker's address never reads the token. With
 * `ID@HOST:PORT`, the tracker must also prove that key.
 */
import type tls from 'node:tls';
import {
  ADMIN_BINDING_LABEL,
  channelBinding,
  checkPinnedKey,
  dial,
  P2PError,
  parsePinnedAddress,
  Role,
  verifyAdminProof,
  type Body,
  type Connection,
} from '../protocol/index.js';

/** Entries asked for per page; the tracker may give fewer (it also keeps a page to about 4 MiB). */
const PAGE_ENTRIES = 5000;

export class AdminClient {
  private constructor(
    private conn: Connection,
    private readonly token: string,
    private readonly tracker: string,
  ) {}

  static async connect(tracker: string, token: string): Promise<AdminClient> {
    const target = parsePinnedAddress(tracker);
    // Without a pin, any key will do here (nothing is kept): the token proof below authenticates the tracker.
    const verify = (key: Buffer | undefined): void => void (target.id && checkPinnedKey(target, key, { get: () => undefined, learn: () => undefined }, 'tracker', '--tracker'));
    const conn = await dial(target, { connectTimeoutMs: 2000, requestTimeoutMs: 5000, tls: { verify } });
    try {
      const welcome = await conn.request('HELLO', { role: Role.admin, listenPort: 0, software: 'p2p-cli', link: Buffer.alloc(0) }, 'WELCOME');
      if (!verifyAdminProof(token, channelBinding(conn.socket as tls.TLSSocket, ADMIN_BINDING_LABEL), welcome.proof)) {
        throw new P2PError(
          'P2P_UNAUTHORIZED',
          welcome.proof.length === 0
            ? `the tracker at ${tracker} takes no admin commands (it has no --admin-token-file)`
            : `the tracker at ${tracker} does not prove the token in --token-file: the token is wrong, or that is not your tracker`,
        );
      }
    } catch (err) {
      conn.destroy();
      throw err;
    }
    return new AdminClient(conn, token, tracker);
  }

  status(): Promise<Body<'ADMIN_STATUS_RESULT'>> {
    return this.conn.request('ADMIN_STATUS', { token: this.token }, 'ADMIN_STATUS_RESULT');
  }
  /**
   * The whole blacklist, oldest entry first, read page by page: one answer holds only some tens of
   * thousands of entries. Entries added or removed while the pages are read may or may not be in it.
   */
  async blacklist(): Promise<Body<'ADMIN_BLACKLIST'>> {
    const entries = await this.pages(
      (after) => this.conn.request('ADMIN_BLACKLIST_PAGE', { token: this.token, after, limit: PAGE_ENTRIES }, 'ADMIN_BLACKLIST_PAGE_RESULT'),
      (page) => page.entries,
      async () => (await this.conn.request('ADMIN_BLACKLIST_LIST', { token: this.token }, 'ADMIN_BLACKLIST')).entries,
    );
    // The order the whole-list answer has always had.
    return { entries: entries.sort((a, b) => a.since - b.since || a.target.localeCompare(b.target)) };
  }
  add(target: string, reason: string): Promise<Body<'OK'>> {
    return this.conn.request('ADMIN_BLACKLIST_ADD', { token: this.token, target, reason }, 'OK');
  }
  remove(target: string): Promise<Body<'OK'>> {
    return this.conn.request('ADMIN_BLACKLIST_REMOVE', { token: this.token, target }, 'OK');
  }
  /** Every report, oldest first, read page by page as the blacklist is. */
  async reports(): Promise<Body<'ADMIN_REPORTS_RESULT'>> {
    const reports = await this.pages(
      (after) => this.conn.request('ADMIN_REPORTS_PAGE', { token: this.token, after, limit: PAGE_ENTRIES }, 'ADMIN_REPORTS_PAGE_RESULT'),
      (page) => page.reports,
      async () => (await this.conn.request('ADMIN_REPORTS', { token: this.token }, 'ADMIN_REPORTS_RESULT')).reports,
    );
    return { reports };
  }

  /**
   * Reads pages until one says it is the last. A tracker older than the pages closes the connection on
   * the first (P2P_UNKNOWN_MESSAGE): then the list is asked for whole, as it answers, on a new connection.
   */
  private async pages<P extends { next: string }, T>(ask: (after: string) => Promise<P>, items: (page: P) => T[], whole: () => Promise<T[]>): Promise<T[]> {
    if (this.olderTracker) {
      await this.olderTracker;
      return whole();
    }
    const all: T[] = [];
    let after = '';
    for (;;) {
      let page: P;
      try {
        page = await ask(after);
      } catch (err) {
        if (after !== '' || !(err instanceof P2PError) || err.code !== 'P2P_UNKNOWN_MESSAGE') throw err;
        // One new connection, whichever call found out first; every later call asks for whole lists.
        this.olderTracker ??= AdminClient.connect(this.tracker, this.token).then((fresh) => {
          this.conn.destroy();
          this.conn = fresh.conn;
        });
        await this.olderTracker;
        return whole();
      }
      all.push(...items(page));
      if (page.next === '') return all;
      if (page.next === after) throw new P2PError('P2P_INTERNAL', `the tracker at ${this.tracker} gave the same page twice`);
      after = page.next;
    }
  }

  /** Set once the tracker turned out to be of a release without pages: settles when the new connection is up. */
  private olderTracker: Promise<void> | undefined;
  close(): void {
    this.conn.close();
  }
}
