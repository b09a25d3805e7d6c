/**
 * An identity key on disk: the Ed25519 private key (PKCS#8 PEM, mode 0600) and, next to it, the
 * self-signed certificate TLS presents for it. Made on first start; kept for good, since other hosts pin
 * the key (a new key is a new identity).
 */
import fs from 'node:fs';
import path from 'node:path';
import { generateKeyPair, keyPairFromPem } from './identity.js';
import { syncFolderSync } from './local-files.js';
import { tlsIdentity, type TlsIdentity } from './tls.js';

/** Loads `keyFile` (making it first if missing) and its certificate `keyFile` with `.crt` for `.key`. */
export function loadIdentityFile(keyFile: string): TlsIdentity {
  let pem: string | undefined;
  try {
    pem = fs.readFileSync(keyFile, 'utf8');
    if ((fs.statSync(keyFile).mode & 0o077) !== 0) fs.chmodSync(keyFile, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (pem === undefined) {
    pem = generateKeyPair().pem;
    const tmp = `${keyFile}.${process.pid}.tmp`;
    // Synced before the rename and the folder after it: a power loss must not leave an empty key file
    // (the daemon could not start) or lose the key its id was announced under.
    fs.writeFileSync(tmp, pem, { mode: 0o600, flush: true });
    fs.renameSync(tmp, keyFile);
    syncFolderSync(path.dirname(keyFile));
  }
  return tlsIdentity(keyPairFromPem(pem), keyFile.replace(/\.key$/, '') + '.crt');
}
