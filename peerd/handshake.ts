import { randomBytes } from 'node:crypto';
import {
  authPayload,
  P2PError,
  Role,
  serverProofPayload,
  signPayload,
  verifyPayload,
  type Body,
  type Connection,
  type KeyPair,
} from '../protocol/index.js';

export const SOFTWARE = 'p2pshare-peerd/0.1';

/**
 * Client side of the handshake: HELLO (our key and a nonce) -> CHALLENGE -> AUTH (our signature over the
 * server's nonce) -> WELCOME. With `serverKey`, the server must also prove that key by signing our nonce:
 * a peer that only claims another's address cannot pass.
 */
export async function clientHandshake(
  conn: Connection,
  keys: KeyPair,
  listenPort: number,
  serverKey?: Buffer,
  timeoutMs = 3000,
): Promise<Body<'WELCOME'>> {
  const nonce = randomBytes(32);
  const challenge = await conn.request('HELLO', { role: Role.peer, publicKey: keys.publicKey, nonce, listenPort, software: SOFTWARE }, 'CHALLENGE', { timeoutMs });
  if (serverKey) {
    if (!challenge.publicKey.equals(serverKey) || !verifyPayload(serverKey, serverProofPayload(nonce), challenge.signature)) {
      throw new P2PError('P2P_BAD_SIGNATURE', `${conn.remoteAddress}:${conn.remotePort} could not prove the identity the tracker lists for it`);
    }
  }
  return conn.request('AUTH', { signature: signPayload(keys, authPayload(challenge.nonce)) }, 'WELCOME', { timeoutMs });
}
