/**
 * TLS 1.3 under every link. Each peer and each tracker presents a self-signed X.509 certificate for its
 * own Ed25519 identity key; there is no certificate authority. What authenticates the other side is its
 * key: the caller checks it against the key it expects (the one the tracker lists for a peer, the one
 * pinned or learned for a tracker), and the TLS handshake has proven that the other side holds it. The
 * length-prefixed frames run unchanged inside. Which key to expect is the daemons' policy, not this
 * file's: it only makes the certificates, sets TLS up and reads the key the other side proved.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type net from 'node:net';
import tls from 'node:tls';
import { constants, createPublicKey, sign, X509Certificate } from 'node:crypto';
import { P2PError } from './errors.js';
import { peerIdOf, type KeyPair } from './identity.js';
import { rawKey, remoteKey } from './tls-key.js';

export { remoteKey };

/** node:tls's connect, for connection.ts, which loads this module only when it dials a TLS link. */
export const tlsConnect = tls.connect;

const ED25519_OID = '1.3.101.112';

/** What one side presents: its keys, and a certificate and private key as TLS takes them (PEM). */
export interface TlsIdentity {
  readonly keys: KeyPair;
  readonly cert: string;
  readonly key: string;
}

/** Settings both sides use: TLS 1.3 only; no session tickets (every connection proves its keys afresh). */
const COMMON = {
  minVersion: 'TLSv1.3',
  maxVersion: 'TLSv1.3',
  // AES-128-GCM first: on CPUs with AES instructions it is the cheapest per byte of the three.
  ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256',
} as const;

/**
 * A self-signed certificate for `keys` (PEM): subject and issuer `CN=p2pshare <peer id>`, valid from 2000
 * to 9999 (keys, not dates, are what the other side checks). Loads the ASN.1 library on first use only.
 */
export function certificateFor(keys: KeyPair): string {
  const require = createRequire(import.meta.url);
  const x509 = require('@peculiar/asn1-x509') as typeof import('@peculiar/asn1-x509');
  const { AsnConvert } = require('@peculiar/asn1-schema') as typeof import('@peculiar/asn1-schema');
  const name = new x509.Name([
    new x509.RelativeDistinguishedName([new x509.AttributeTypeAndValue({ type: '2.5.4.3', value: new x509.AttributeValue({ utf8String: `p2pshare ${keys.peerId}` }) })]),
  ]);
  const spki = createPublicKey(keys.privateKey).export({ type: 'spki', format: 'der' });
  const tbs = new x509.TBSCertificate({
    version: x509.Version.v3,
    serialNumber: arrayBuffer(Buffer.from(`01${keys.peerId.slice(0, 16)}`, 'hex')), // positive: a leading 01 byte
    signature: new x509.AlgorithmIdentifier({ algorithm: ED25519_OID }),
    issuer: name,
    subject: name,
    validity: new x509.Validity({ notBefore: new Date('2000-01-01T00:00:00Z'), notAfter: new Date('9999-12-31T23:59:59Z') }),
    subjectPublicKeyInfo: AsnConvert.parse(spki, x509.SubjectPublicKeyInfo),
  });
  const signature = sign(null, Buffer.from(AsnConvert.serialize(tbs)), keys.privateKey);
  const cert = new x509.Certificate({ tbsCertificate: tbs, signatureAlgorithm: new x509.AlgorithmIdentifier({ algorithm: ED25519_OID }), signatureValue: arrayBuffer(signature) });
  const der = Buffer.from(AsnConvert.serialize(cert));
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n?$/, '\n')}-----END CERTIFICATE-----\n`;
}

function arrayBuffer(buf: Buffer): ArrayBuffer {
  return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
}

/**
 * The TLS identity for `keys`. With `certFile`, the certificate is kept there (mode 0600) and made again
 * only when it is missing or is not for these keys: starting a daemon then needs no ASN.1 library.
 */
export function tlsIdentity(keys: KeyPair, certFile?: string): TlsIdentity {
  const key = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  if (certFile) {
    try {
      const cert = fs.readFileSync(certFile, 'utf8');
      if (certificateKey(cert)?.equals(keys.publicKey)) return { keys, cert, key };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  const cert = certificateFor(keys);
  if (certFile) {
    const tmp = `${certFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, cert, { mode: 0o600 });
    fs.renameSync(tmp, certFile);
  }
  return { keys, cert, key };
}

/** The raw Ed25519 key of a certificate (PEM or DER), or undefined when it holds another kind of key. */
function certificateKey(cert: string | Buffer): Buffer | undefined {
  try {
    return rawKey(new X509Certificate(cert).publicKey);
  } catch {
    return undefined;
  }
}

/** The peer id of the key the other side proved, or undefined (see remoteKey). */
export function remotePeerId(socket: tls.TLSSocket): string | undefined {
  const key = remoteKey(socket);
  return key ? peerIdOf(key) : undefined;
}

/**
 * A value both ends of one TLS session compute alike and nobody else can (RFC 5705 keying material):
 * a proof made over it is good for this connection only, so it cannot be relayed to another.
 */
export function channelBinding(socket: tls.TLSSocket, label: string): Buffer {
  return socket.exportKeyingMaterial(32, label, Buffer.alloc(0));
}

/** A server's TLS settings for `identity`; clients are asked for a certificate but may present none. */
export function serverContext(identity: TlsIdentity): tls.SecureContext {
  return tls.createSecureContext({ ...COMMON, cert: identity.cert, key: identity.key, secureOptions: constants.SSL_OP_NO_TICKET });
}

/** Starts TLS as the server on an accepted socket. The other side's key is readable once 'secure' fires. */
export function acceptTls(socket: net.Socket, context: tls.SecureContext): tls.TLSSocket {
  const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: context, requestCert: true, rejectUnauthorized: false });
  // Destroying the TLS socket leaves the TCP one to its own close; end both together.
  secure.once('close', () => socket.destroy());
  return secure;
}

/** How a client dials with TLS: what it presents, and how it checks the server's key. */
export interface TlsDialOptions {
  /** Our certificate (peers and trackers); an admin presents none. */
  identity?: TlsIdentity | undefined;
  /**
   * Checks the key the server proved (raw 32 bytes, or undefined if it presented none) and throws a
   * P2PError to refuse it. The connection is closed and `dial` rejects with that error.
   */
  verify: (key: Buffer | undefined) => void;
  /**
   * ALPN protocols offered in the ClientHello. Nothing is negotiated with them: a server reads them before
   * the handshake to put a tracker's own cluster links ahead of its peers (CLUSTER_ALPN).
   */
  alpn?: string[] | undefined;
}

/** What a tracker offers on its links to the other trackers: their handshakes do not queue behind peers'. */
export const CLUSTER_ALPN = 'p2pshare-cluster';

const clientContexts = new WeakMap<TlsIdentity, tls.SecureContext>();
let anonymousContext: tls.SecureContext | undefined;

/**
 * The client's TLS settings, made once per identity: making them parses the PEM key and certificate (about
 * 1.5 ms), which a download dialling 20 holders at once would otherwise pay 20 times before its first byte.
 */
function clientContext(identity: TlsIdentity | undefined): tls.SecureContext {
  if (!identity) return (anonymousContext ??= tls.createSecureContext({ ...COMMON }));
  let context = clientContexts.get(identity);
  if (!context) {
    context = tls.createSecureContext({ ...COMMON, cert: identity.cert, key: identity.key });
    clientContexts.set(identity, context);
  }
  return context;
}

/** tls.connect options for a client (the key check runs after the handshake, in verifyServer). */
export function clientOptions(o: TlsDialOptions, host: string): tls.ConnectionOptions {
  return {
    secureContext: clientContext(o.identity),
    // No certificate authority: the key is checked against the one expected, below.
    rejectUnauthorized: false,
    checkServerIdentity: () => undefined,
    servername: isIpLiteral(host) ? undefined : host,
    ...(o.alpn ? { ALPNProtocols: o.alpn } : {}),
  } as tls.ConnectionOptions;
}

/** After the client's handshake: the server's key must be the one expected. Throws a P2PError if not. */
export function verifyServer(socket: tls.TLSSocket, o: TlsDialOptions): void {
  if (socket.getProtocol() !== 'TLSv1.3') throw new P2PError('P2P_BAD_VERSION', `the server spoke ${socket.getProtocol() ?? 'no TLS'}, not TLS 1.3`);
  o.verify(remoteKey(socket));
}

function isIpLiteral(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(':');
}

/**
 * Whether a ClientHello (the first bytes a TLS client sends) offers the ALPN protocol `protocol`. Read
 * before the handshake starts, from the first record only; anything short, malformed or unusual is "no".
 */
export function offersAlpn(first: Buffer, protocol: string): boolean {
  const want = Buffer.from(protocol, 'latin1');
  // Record header: type 22 (handshake), version, length; then handshake type 1 (ClientHello) and length.
  if (first.length < 9 || first[0] !== 22 || first[5] !== 1) return false;
  const end = Math.min(first.length, 5 + first.readUInt16BE(3));
  let at = 9 + 2 + 32; // client version, random
  const skip = (lengthBytes: 1 | 2): boolean => {
    if (at + lengthBytes > end) return false;
    at += lengthBytes + (lengthBytes === 1 ? first[at]! : first.readUInt16BE(at));
    return at <= end;
  };
  if (!skip(1) || !skip(2) || !skip(1)) return false; // session id, cipher suites, compression methods
  if (at + 2 > end) return false;
  const extensionsEnd = Math.min(end, at + 2 + first.readUInt16BE(at));
  at += 2;
  while (at + 4 <= extensionsEnd) {
    const type = first.readUInt16BE(at);
    const length = first.readUInt16BE(at + 2);
    at += 4;
    if (at + length > extensionsEnd) return false;
    if (type === 16) {
      // application_layer_protocol_negotiation: a 2-byte list length, then 1-byte-length names.
      let p = at + 2;
      const listEnd = Math.min(at + length, p + (length >= 2 ? first.readUInt16BE(at) : 0));
      while (p < listEnd) {
        const n = first[p]!;
        if (p + 1 + n > listEnd) return false;
        if (n === want.length && first.subarray(p + 1, p + 1 + n).equals(want)) return true;
        p += 1 + n;
      }
      return false;
    }
    at += length;
  }
  return false;
}
