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

export class AdminClient {
  private constructor(
    private readonly conn: Connection,
    private readonly token: string,
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
    return new AdminClient(conn, token);
  }

  status(): Promise<Body<'ADMIN_STATUS_RESULT'>> {
    return this.conn.request('ADMIN_STATUS', { token: this.token }, 'ADMIN_STATUS_RESULT');
  }
  blacklist(): Promise<Body<'ADMIN_BLACKLIST'>> {
    return this.conn.request('ADMIN_BLACKLIST_LIST', { token: this.token }, 'ADMIN_BLACKLIST');
  }
  add(target: string, reason: string): Promise<Body<'OK'>> {
    return this.conn.request('ADMIN_BLACKLIST_ADD', { token: this.token, target, reason }, 'OK');
  }
  remove(target: string): Promise<Body<'OK'>> {
    return this.conn.request('ADMIN_BLACKLIST_REMOVE', { token: this.token, target }, 'OK');
  }
  reports(): Promise<Body<'ADMIN_REPORTS_RESULT'>> {
    return this.conn.request('ADMIN_REPORTS', { token: this.token }, 'ADMIN_REPORTS_RESULT');
  }
  close(): void {
    this.conn.close();
  }
}
