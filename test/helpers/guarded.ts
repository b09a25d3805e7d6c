/**
 * Decoding with a work budget. A decoder that trusts a list count more than the bytes behind it loops for
 * as long as the count says (four billion times for 0xffffffff) and takes the whole process down; a test
 * that fed it such a body would hang or crash instead of failing. The budget turns that into a fast,
 * ordinary failure.
 *
 * How: binary-parser copies every id32/sig64 field with `body.constructor.from(...)`, so giving the body
 * its own `constructor` counts (and cuts off) the copies. An honest decoder copies at most one field per
 * 32 bytes of body (plus a little slack); a decoder that works otherwise is simply not counted, and the
 * budget does no harm.
 */
import { decodeBody, type MessageName } from '../../protocol/index.js';

const SLACK_COPIES = 16;

export class BudgetExceeded extends Error {
  constructor(readonly messageName: string, readonly bodyBytes: number) {
    super(`decoding a ${bodyBytes}-byte ${messageName} body built more fields than the body can hold`);
  }
}

/** Decodes like decodeBody, but throws BudgetExceeded if the decoder builds more fields than bytes allow. */
export function decodeWithBudget(name: MessageName, body: Buffer): unknown {
  const guarded = Buffer.from(body);
  // One copy per 32 bytes, plus slack: binary-parser slices fixed-size fields past the end without
  // complaint before the final length check refuses the body, a bounded waste that is no bug.
  const budget = Math.floor(body.length / 32) + SLACK_COPIES;
  let copies = 0;
  let exceeded = false;
  Object.defineProperty(guarded, 'constructor', {
    value: {
      from(src: Uint8Array): Buffer {
        if (++copies > budget) {
          exceeded = true;
          throw new BudgetExceeded(name, body.length);
        }
        return Buffer.from(src);
      },
    },
  });
  try {
    return decodeBody(name, guarded);
  } catch (err) {
    // The codec wraps whatever the parser throws; the budget's verdict comes first.
    if (exceeded) throw new BudgetExceeded(name, body.length);
    throw err;
  }
}
