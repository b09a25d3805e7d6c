import { P2PError } from './errors.js';

export const MAX_NAME_BYTES = 255;

/** A shared file's name: one path component of printable characters, no '/', '\\', '..' or NUL. */
export function validateName(name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) > MAX_NAME_BYTES) {
    throw new P2PError('P2P_BAD_NAME', `file names must be 1 to ${MAX_NAME_BYTES} bytes`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[/\\\u0000-\u001f\u007f]/.test(name) || name === '.' || name === '..' || name.includes('..')) {
    throw new P2PError('P2P_BAD_NAME', `file name '${name.replace(/[^\x20-\x7e]/g, '?')}' contains '/', '\\', '..' or control characters`);
  }
}
