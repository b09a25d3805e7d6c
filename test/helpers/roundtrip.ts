/**
 * The round-trip table: one helper turns a list of (message, body, expected frame bytes) into encode,
 * decode and round-trip tests, so adding a row is all a new message needs.
 */
import { Framer, Messages, decodeBody, encodeFrame, type Body, type Frame, type MessageName } from '../../protocol/index.js';
import type { Tap } from './tap.js';


/** One row: `frame` is the whole expected frame (header and body), built without the code under test. */
export type Sample = {
  [N in MessageName]: { name: N; requestId: number; body: Body<N>; frame: Buffer; title?: string };
}[MessageName];

export function sampleTitle(s: Sample): string {
  return s.title ?? `${s.name} #${s.requestId}`;
}

/** Frames out of a fresh Framer fed with `pieces`, bodies copied so later pushes cannot disturb them. */
export function framesFrom(pieces: readonly Buffer[], maxBodyBytes?: number): Frame[] {
  const framer = new Framer(maxBodyBytes);
  const out: Frame[] = [];
  for (const piece of pieces) framer.push(piece, (f) => out.push({ ...f, body: Buffer.from(f.body) }));
  return out;
}

/** The same bytes cut at `offsets` (sorted, strictly inside). */
export function splitAt(bytes: Buffer, offsets: readonly number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let from = 0;
  for (const at of offsets) {
    pieces.push(bytes.subarray(from, at));
    from = at;
  }
  pieces.push(bytes.subarray(from));
  return pieces;
}

export function oneBytePieces(bytes: Buffer): Buffer[] {
  return Array.from(bytes, (b) => Buffer.from([b]));
}

const encodeAny = (s: Sample): Buffer => encodeFrame(s.name as 'OK', s.requestId, s.body as Body<'OK'>);

export function roundTripTable(t: Tap, samples: readonly Sample[]): void {
  for (const s of samples) {
    const title = sampleTitle(s);
    t.test(`${title}: encode`, (t) => {
      t.equal(encodeAny(s).toString('hex'), s.frame.toString('hex'), 'encodeFrame writes the expected bytes');
      const size = (Messages[s.name].codec.size as (b: unknown) => number)(s.body);
      t.equal(size, s.frame.length - 10, 'the codec sizes the body exactly');
      t.end();
    });
    t.test(`${title}: decode`, (t) => {
      const frames = framesFrom([s.frame]);
      t.equal(frames.length, 1, 'one frame out');
      const [f] = frames;
      t.equal(f?.name, s.name, 'message type resolves to its name');
      t.equal(f?.type, s.frame[1], 'type byte kept');
      t.equal(f?.requestId, s.requestId, 'request id');
      t.strictSame(decodeBody(s.name, f!.body), s.body, 'body decodes to the expected value');
      t.end();
    });
    t.test(`${title}: round trip`, (t) => {
      const encoded = encodeAny(s);
      const decoded = decodeBody(s.name, encoded.subarray(10));
      t.strictSame(decoded, s.body, 'decode(encode(body)) is the body');
      const again = encodeFrame(s.name as 'OK', s.requestId, decoded as Body<'OK'>);
      t.equal(again.toString('hex'), encoded.toString('hex'), 'encode(decode(bytes)) is the bytes');
      t.end();
    });
  }
}
