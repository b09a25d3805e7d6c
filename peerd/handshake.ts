import { P2PError, Role, type Body, type Connection, type TlsDialOptions, type TlsIdentity } from '../protocol/index.js';

export const SOFTWARE = 'p2pshare-peerd/0.1';

/**
 * The client's side of a peer session, once TLS has proven both keys: HELLO (our role and the port we
 * serve chunks on) -> WELCOME (our peer id as the server sees it, our address, the lease, the tracker's role).
 */
export function clientHandshake(conn: Connection, listenPort: number, timeoutMs = 3000): Promise<Body<'WELCOME'>> {
  return conn.request('HELLO', { role: Role.peer, listenPort, software: SOFTWARE, link: Buffer.alloc(0) }, 'WELCOME', { timeoutMs });
}

/** TLS for dialling a peer: we present our key, and it must prove the key the tracker lists for it. */
export function peerTls(identity: TlsIdentity, expected: Buffer, label: string): TlsDialOptions {
  return {
    identity,
    verify: (key) => {
      if (!key || !key.equals(expected)) {
        throw new P2PError('P2P_KEY_MISMATCH', `${label} did not prove the key the tracker lists for it: it may be another host at that address`);
      }
    },
  };
}
