import fs from 'node:fs';
import path from 'node:path';
import { generateKeyPair, keyPairFromPem, type KeyPair } from '../protocol/index.js';

/** Creates `dir` with mode 0700 if missing; refuses a data folder that others can write to. */
export function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.statSync(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a folder`);
  if ((st.mode & 0o022) !== 0) fs.chmodSync(dir, st.mode & ~0o077 & 0o777);
}

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
  fs.writeFileSync(tmp, pem, { mode: 0o600 });
  fs.renameSync(tmp, file);
  return keys;
}
