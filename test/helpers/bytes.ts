/**
 * Byte builders for expected wire bytes. They use nothing from protocol/: the point of an expected frame is
 * that it is written from the specification (protocol/README.md), not by the code under test.
 */

export const cat = (...parts: Buffer[]): Buffer => Buffer.concat(parts);

/** Hex with any whitespace, e.g. `hex('01 02 0000002a 00000000')`. */
export function hex(text: string): Buffer {
  const clean = text.replace(/\s+/g, '');
  if (!/^([0-9a-f]{2})*$/i.test(clean)) throw new Error(`not hex: ${text}`);
  return Buffer.from(clean, 'hex');
}

export const u8 = (n: number): Buffer => Buffer.from([n]);

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

export function u64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

export const bool = (v: boolean): Buffer => u8(v ? 1 : 0);

/** `str`: u16 byte length, then UTF-8. */
export function str(s: string): Buffer {
  const utf8 = Buffer.from(s, 'utf8');
  return cat(u16(utf8.length), utf8);
}

/** `text`: u32 byte length, then UTF-8. */
export function text(s: string): Buffer {
  const utf8 = Buffer.from(s, 'utf8');
  return cat(u32(utf8.length), utf8);
}

/** `bytes`: u32 byte length, then the bytes. */
export const bytes = (b: Buffer): Buffer => cat(u32(b.length), b);

/** A list: u32 item count, then the items back to back. */
export const list = (...items: Buffer[]): Buffer => cat(u32(items.length), ...items);

/** `n` bytes all equal to `byte` (readable stand-ins for ids, keys and signatures). */
export const filled = (n: number, byte: number): Buffer => Buffer.alloc(n, byte);

/** A whole frame: u8 version, u8 type, u32 request id, u32 body length, body. */
export function frame(type: number, requestId: number, body: Buffer, version = 1): Buffer {
  const head = Buffer.alloc(10);
  head[0] = version;
  head[1] = type;
  head.writeUInt32BE(requestId, 2);
  head.writeUInt32BE(body.length, 6);
  return cat(head, body);
}

/** A header alone, declaring `bodyBytes` that never follow. */
export function header(type: number, requestId: number, bodyBytes: number, version = 1): Buffer {
  const head = Buffer.alloc(10);
  head[0] = version;
  head[1] = type;
  head.writeUInt32BE(requestId, 2);
  head.writeUInt32BE(bodyBytes, 6);
  return head;
}
