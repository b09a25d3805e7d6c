import { P2PError } from './errors.js';

export const MAX_NAME_BYTES = 255;

/**
 * A shared file's name: one path component of printable characters: no '/', '\\' or control
 * characters, and not '.' or '..' (the only names that mean another folder once '/' is refused).
 * Dots elsewhere are fine ('notes...txt', 'a..b').
 */
export function validateName(name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) > MAX_NAME_BYTES) {
    throw new P2PError('P2P_BAD_NAME', `file names must be 1 to ${MAX_NAME_BYTES} bytes`);
  }
  if (name === '.' || name === '..') throw new P2PError('P2P_BAD_NAME', `'${name}' is not a file name`);
  // eslint-disable-next-line no-control-regex
  if (/[/\\\u0000-\u001f\u007f]/.test(name)) {
    // Only control characters are shown escaped: every other character, non-ASCII included, as it is.
    // eslint-disable-next-line no-control-regex
    const shown = name.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
    throw new P2PError('P2P_BAD_NAME', `file name '${shown}' contains '/', '\\' or control characters`);
  }
}
