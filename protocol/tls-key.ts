/**
 * The Ed25519 key the other side of a TLS socket proved, read from its certificate. Apart from
 * protocol/tls.ts so that a connection can answer it without loading the TLS machinery: `p2p` talks to
 * its daemon over a Unix socket and never needs it (loading node:tls and the identities costs a command
 * about 30 ms).
 */
import type { KeyObject } from 'node:crypto';
import type net from 'node:net';
import type tls from 'node:tls';

const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** True for a TLS socket (checked without loading node:tls). */
export function isTlsSocket(socket: net.Socket): socket is tls.TLSSocket {
  return (socket as Partial<tls.TLSSocket>).encrypted === true;
}

/** An Ed25519 public key as its raw 32 bytes, or undefined for another kind of key. */
export function rawKey(key: KeyObject): Buffer | undefined {
  if (key.asymmetricKeyType !== 'ed25519') return undefined;
  const spki = key.export({ type: 'spki', format: 'der' });
  if (spki.length !== 44 || !spki.subarray(0, 12).equals(ED25519_SPKI_PREFIX)) return undefined;
  return Buffer.from(spki.subarray(12));
}

/**
 * The Ed25519 key the other side of `socket` proved in the handshake (raw 32 bytes), or undefined if it
 * presented no certificate (an admin) or one for another kind of key.
 */
export function remoteKey(socket: tls.TLSSocket): Buffer | undefined {
  const cert = socket.getPeerX509Certificate();
  return cert ? rawKey(cert.publicKey) : undefined;
}
