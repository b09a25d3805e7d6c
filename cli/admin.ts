/** `p2p admin`: talks to a tracker directly, presenting the admin token on every request. */
import { randomBytes } from 'node:crypto';
import { dial, parseAddress, Role, type Body, type Connection } from '../protocol/index.js';

export class AdminClient {
  private constructor(
    private readonly conn: Connection,
    private readonly token: string,
  ) {}

  static async connect(tracker: string, token: string): Promise<AdminClient> {
    const conn = await dial(parseAddress(tracker), { connectTimeoutMs: 2000, requestTimeoutMs: 5000 });
    await conn.request('HELLO', { role: Role.admin, publicKey: Buffer.alloc(0), nonce: randomBytes(32), listenPort: 0, software: 'p2p-cli' }, 'CHALLENGE');
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
