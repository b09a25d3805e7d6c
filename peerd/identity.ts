import fs from 'node:fs';
import path from 'node:path';
import { generateKeyPair, keyPairFromPem, type KeyPair } from '../protocol/index.js';
import { syncFolderSync } from '../protocol/local-files.js';

/** Loads DATA/identity.key, or makes a new Ed25519 key there (mode 0600) on first start. */
export function loadIdentity(dataDir: string): KeyPair {
  const file = path.join(dataDir, 'identity.key');
  try {
    const pem = fs.readFileSync(file, 'utf8');
    const st = fs.statSync(file);
    if ((st.mode & 0o077) !== 0) fs.chmodSync(file, 0o600);
    return keyPairFromPem(pem);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const { pem, keys } = generateKeyPair();
  const tmp = `${file}.${process.pid}.tmp`;
  // Synced before the rename and the folder after it: a power loss must not leave an empty key file
  // (the daemon could not start) or lose the key its peer id was announced under.
  fs.writeFileSync(tmp, pem, { mode: 0o600, flush: true });
  fs.renameSync(tmp, file);
  syncFolderSync(dataDir);
  return keys;
}
