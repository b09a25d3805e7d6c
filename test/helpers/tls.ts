/**
 * TLS for test clients: every link is TLS 1.3 with self-signed certificates for Ed25519 keys
 * (protocol/tls.ts). A test client presents a key of its own and, unless it checks one, accepts the
 * server's key.
 */
import { dial, generateKeyPair, P2PError, tlsIdentity, type Address, type Body, type Connection, type DialOptions, type KeyPair, type KnownKeys, type TlsDialOptions, type TlsIdentity } from '../../protocol/index.js';
import { clientHandshake } from '../../peerd/handshake.js';

const identities = new Map<string, TlsIdentity>();

/** The TLS identity of `keys` (a fresh key pair if none), made once per key. */
export function identityOf(keys: KeyPair = generateKeyPair().keys): TlsIdentity {
  let id = identities.get(keys.peerId);
  if (!id) {
    id = tlsIdentity(keys);
    identities.set(keys.peerId, id);
  }
  return id;
}

/** Dial options: present `keys` (or none, as an admin), accept any server key or require `expect`. */
export function tlsAs(keys: KeyPair | undefined, expect?: Buffer): TlsDialOptions {
  return {
    identity: keys ? identityOf(keys) : undefined,
    verify: (key) => {
      if (expect && !key?.equals(expect)) throw new P2PError('P2P_KEY_MISMATCH', 'the server proved another key than the one expected');
    },
  };
}

/**
 * Dials `to` (an address, or a port on 127.0.0.1) in TLS as a peer with `keys` and completes the
 * handshake (HELLO -> WELCOME), as a hand-written client would: the connection and the tracker's WELCOME.
 */
export async function peerHandshake(to: Address | number, keys: KeyPair = generateKeyPair().keys, options: DialOptions = {}, listenPort = 1): Promise<{ conn: Connection; welcome: Body<'WELCOME'> }> {
  const address = typeof to === 'number' ? { host: '127.0.0.1', port: to } : to;
  const conn = await dial(address, { connectTimeoutMs: 1000, requestTimeoutMs: 3000, ...options, tls: tlsAs(keys) });
  try {
    return { conn, welcome: await clientHandshake(conn, listenPort) };
  } catch (err) {
    conn.destroy();
    throw err;
  }
}

/** peerHandshake's connection alone. */
export async function peerSession(to: Address | number, keys: KeyPair = generateKeyPair().keys, options: DialOptions = {}, listenPort = 1): Promise<Connection> {
  return (await peerHandshake(to, keys, options, listenPort)).conn;
}

/** What a TrackerClient needs to present: a fresh identity, and its own memory of tracker keys. */
export function clientIdentity(keys: KeyPair = generateKeyPair().keys): { identity: TlsIdentity; knownTrackers: KnownKeys } {
  const known = new Map<string, Buffer>();
  return { identity: identityOf(keys), knownTrackers: { get: (a) => known.get(a), learn: (a, k) => void known.set(a, k) } };
}
