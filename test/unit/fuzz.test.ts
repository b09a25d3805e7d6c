/**
 * Property tests: whatever bytes arrive, the protocol layer answers only with its own errors (which close
 * that one connection cleanly), never with a TypeError, a RangeError or a hang; and every valid body
 * survives the trip through encoder, framer and decoder.
 */
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import t from 'tap';
import { Framer, Messages, P2PError, ProtocolError, decodeBody, encodeFrame, type Body, type MessageName } from '../../protocol/index.js';
import { cat, frame } from '../helpers/bytes.js';
import { decodeWithBudget } from '../helpers/guarded.js';
import { anyBytes, mutate, mutation } from '../helpers/mutate.js';
import { splitAt } from '../helpers/roundtrip.js';
import { arbitraryMessage, messageNames, referenceEncode, schemaOf } from '../helpers/schema.js';

const MAX_BODY = 4096;

/** Pushes `pieces` through a Framer and decodes every frame; returns what was thrown, if anything. */
function feed(pieces: readonly Buffer[]): { frames: number; thrown?: unknown } {
  const framer = new Framer(MAX_BODY);
  let frames = 0;
  try {
    for (const piece of pieces)
      framer.push(piece, (f) => {
        frames++;
        decodeWithBudget(f.name, f.body);
      });
  } catch (thrown) {
    return { frames, thrown };
  }
  return { frames };
}

/** Fails the property, with the culprit in the message, unless the error is one of ours. */
function onlyOurErrors(result: { thrown?: unknown }): void {
  const { thrown } = result;
  if (thrown === undefined) return;
  if (!(thrown instanceof ProtocolError)) {
    const what = thrown instanceof Error ? `${thrown.constructor.name}: ${thrown.message}` : String(thrown);
    throw new Error(`expected a ProtocolError (one of ours), got ${what}`);
  }
}

const cutsOf = (length: number, cuts: readonly number[]): number[] =>
  [...new Set(cuts.map((c) => 1 + (c % Math.max(1, length))))].filter((o) => o < length).sort((a, b) => a - b);

const anyMessageName = fc.constantFrom(...messageNames);

/** A frame header that passes the framer's checks, so the random body reaches a decoder. */
const plausibleFrame = fc.tuple(anyMessageName, fc.nat({ max: 0xffffffff }), anyBytes(200)).map(([name, requestId, body]) => frame(Messages[name].code, requestId, body));

const encodeAny = (name: MessageName, requestId: number, body: unknown): Buffer => encodeFrame(name as 'OK', requestId, body as Body<'OK'>);

t.test('random bytes only ever raise our own errors', (t) => {
  fc.assert(
    fc.property(anyBytes(300), fc.array(fc.nat(), { maxLength: 8 }), (input, cuts) => onlyOurErrors(feed(splitAt(input, cutsOf(input.length, cuts))))),
    { numRuns: 1000 },
  );
  t.pass('1000 random inputs, split at random');
  t.end();
});

t.test('random bodies behind valid headers only ever raise our own errors', (t) => {
  fc.assert(
    fc.property(fc.array(plausibleFrame, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 8 }), (frames, cuts) => {
      const stream = cat(...frames);
      onlyOurErrors(feed(splitAt(stream, cutsOf(stream.length, cuts))));
    }),
    { numRuns: 1000 },
  );
  t.pass('1000 streams of frames with random bodies');
  t.end();
});

t.test('whatever a decoder accepts, it accepts again after re-encoding, unchanged', (t) => {
  // Lenient spellings (a bool byte of 2, invalid UTF-8) may decode; their values must still be stable.
  let accepted = 0;
  fc.assert(
    fc.property(anyMessageName, anyBytes(120), (name, body) => {
      let value: unknown;
      try {
        value = decodeWithBudget(name, body);
      } catch (err) {
        onlyOurErrors({ thrown: err });
        return;
      }
      accepted++;
      const again = decodeBody(name, encodeAny(name, 1, value).subarray(10));
      if (!isDeepStrictEqual(again, value)) throw new Error(`${name}: ${body.toString('hex')} is not stable through re-encoding`);
    }),
    { numRuns: 1000 },
  );
  t.ok(accepted > 0, `some random bodies were valid (${accepted}), so the property checked something`);
  t.end();
});

t.test('mutated valid frames only ever raise our own errors', (t) => {
  fc.assert(
    fc.property(
      arbitraryMessage,
      fc.nat({ max: 0xffffffff }),
      fc.array(mutation, { minLength: 1, maxLength: 4 }),
      fc.array(fc.nat(), { maxLength: 6 }),
      ({ name, body }, requestId, mutations, cuts) => {
        const mutated = mutate(encodeAny(name, requestId, body), mutations);
        onlyOurErrors(feed(splitAt(mutated, cutsOf(mutated.length, cuts))));
      },
    ),
    { numRuns: 1000 },
  );
  t.pass('1000 mutated frames');
  t.end();
});

t.test('mutated bodies under an honest header only ever raise our own errors', (t) => {
  // The header's length is fixed up after the mutation, so every mutation reaches the body decoder.
  fc.assert(
    fc.property(arbitraryMessage, fc.array(mutation, { minLength: 1, maxLength: 4 }), ({ name, body }, mutations) => {
      const encoded = encodeAny(name, 1, body);
      const mutatedBody = mutate(encoded.subarray(10), mutations);
      onlyOurErrors(feed([frame(Messages[name].code, 1, mutatedBody)]));
    }),
    { numRuns: 1000 },
  );
  t.pass('1000 mutated bodies');
  t.end();
});

t.test('arbitrary valid bodies round-trip through encoder, framer and decoder', (t) => {
  fc.assert(
    fc.property(arbitraryMessage, fc.nat({ max: 0xffffffff }), fc.array(fc.nat(), { maxLength: 6 }), ({ name, body }, requestId, cuts) => {
      const encoded = encodeAny(name, requestId, body);
      const expected = frame(Messages[name].code, requestId, referenceEncode(schemaOf(name), body));
      if (!encoded.equals(expected)) throw new Error(`${name}: encoded ${encoded.toString('hex')}, specification says ${expected.toString('hex')}`);
      const out: unknown[] = [];
      const framer = new Framer();
      for (const piece of splitAt(encoded, cutsOf(encoded.length, cuts)))
        framer.push(piece, (f) => {
          if (f.name !== name || f.requestId !== requestId) throw new Error(`header came back as ${f.name}#${f.requestId}`);
          out.push(decodeBody(f.name, f.body));
        });
      if (out.length !== 1 || !isDeepStrictEqual(out[0], body)) throw new Error(`${name}: decoded ${JSON.stringify(out)}`);
    }),
    { numRuns: 1000 },
  );
  t.pass('1000 random valid messages');
  t.end();
});

t.test('errors raised on bad input carry a code from the table', (t) => {
  const seen = new Set<string>();
  fc.assert(
    fc.property(fc.oneof(anyBytes(64), plausibleFrame), (input) => {
      const { thrown } = feed([input]);
      if (thrown instanceof P2PError) seen.add(thrown.code);
    }),
    { numRuns: 500 },
  );
  for (const code of seen) t.match(code, /^P2P_(BAD_VERSION|VERSION|UNKNOWN_MESSAGE|FRAME_TOO_LARGE|MALFORMED)$/, `${code} is a framing error`);
  t.ok(seen.has('P2P_MALFORMED') && seen.has('P2P_BAD_VERSION'), `several kinds of bad input were produced (${[...seen].join(', ')})`);
  t.end();
});
