import { P2PError, Role, plainAuthPayload, signPayload, type Body, type Connection, type KeyPair, type TlsDialOptions, type TlsIdentity } from '../protocol/index.js';

export const SOFTWARE = 'p2pshare-peerd/0.1';

/**
 * The client's side of a peer session, once TLS has proven both keys: HELLO (our role, the port we serve
 * chunks on, and to a tracker the features we read: PEER_FEATURES) -> WELCOME (our peer id as the server
 * sees it, our address, the lease, the tracker's role).
 */
export function clientHandshake(conn: Connection, listenPort: number, timeoutMs = 3000, features = 0): Promise<Body<'WELCOME'>> {
  const link = features === 0 ? Buffer.alloc(0) : Buffer.from([features]);
  return conn.request('HELLO', { role: Role.peer, listenPort, software: SOFTWARE, link }, 'WELCOME', { timeoutMs });
}

/**
 * The client's side on a plain chunk link (no TLS; --plain-chunk-links): HELLO -> PLAIN_CHALLENGE, then
 * PLAIN_AUTH, our key's signature of the nonce and of the key of the seeder we meant to reach -> WELCOME.
 * A seeder that takes only TLS answers HELLO with P2P_TLS_REQUIRED.
 */
export async function plainClientHandshake(conn: Connection, listenPort: number, keys: KeyPair, serverKey: Buffer, timeoutMs = 3000): Promise<Body<'WELCOME'>> {
  const { nonce } = await conn.request('HELLO', { role: Role.peer, listenPort, software: SOFTWARE, link: Buffer.alloc(0) }, 'PLAIN_CHALLENGE', { timeoutMs });
  const signature = signPayload(keys, plainAuthPayload(nonce, serverKey));
  return conn.request('PLAIN_AUTH', { publicKey: keys.publicKey, signature }, 'WELCOME', { timeoutMs });
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
