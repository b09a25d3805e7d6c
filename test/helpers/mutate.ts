/**
 * Random and mutated bytes for the fuzz tests (fast-check): the same mutations for the codecs in this
 * process (test/unit/fuzz.test.ts) and for the live daemons (test/integration/fuzz-live.test.ts).
 */
import fc from 'fast-check';
import { cat } from './bytes.js';

/** Up to `max` random bytes. */
export const anyBytes = (max: number): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));

export type Mutation = { kind: 'flip' | 'set' | 'insert' | 'delete' | 'truncate' | 'duplicate'; at: number; byte: number };

export const mutation: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom('flip', 'set', 'insert', 'delete', 'truncate', 'duplicate'),
  at: fc.nat(),
  byte: fc.integer({ min: 0, max: 255 }),
});

/** `original` with every mutation applied in turn (positions taken modulo the length at that point). */
export function mutate(original: Buffer, mutations: readonly Mutation[]): Buffer {
  let b: Buffer = Buffer.from(original);
  for (const m of mutations) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    switch (m.kind) {
      case 'flip':
        b[at]! ^= 1 << (m.byte % 8);
        break;
      case 'set':
        b[at] = m.byte;
        break;
      case 'insert':
        b = cat(b.subarray(0, at), Buffer.from([m.byte]), b.subarray(at));
        break;
      case 'delete':
        b = cat(b.subarray(0, at), b.subarray(at + 1));
        break;
      case 'truncate':
        b = b.subarray(0, at);
        break;
      case 'duplicate':
        b = cat(b.subarray(0, at), b.subarray(at, at + 1 + (m.byte % 8)), b.subarray(at));
        break;
    }
  }
  return b;
}
