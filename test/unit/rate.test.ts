/**
 * --max-upload-rate / --max-download-rate and the rates `p2p status` shows, on a virtual clock: a limit
 * lets a burst through at once, then holds a transfer exactly as long as its rate says, and the meter
 * forgets what passed once it is out of its window.
 */
import t from 'tap';
import { RateMeter, TokenBucket, parseRate } from '../../peerd/rate.js';
import { VirtualClock } from '../../protocol/index.js';
import { track, turn } from '../helpers/net.js';

const MIB = 1024 * 1024;

t.test('a token bucket passes its burst at once, then waits for its rate, on the clock it is given', async (t) => {
  const clock = new VirtualClock();
  const bucket = new TokenBucket(MIB, clock); // burst: a quarter of a second's bytes
  const burst = track(bucket.take(MIB / 4));
  await turn();
  t.equal(burst.state, 'resolved', 'the first 256 KiB pass without waiting');
  t.equal(bucket.waits, 0);

  const next = track(bucket.take(MIB / 8));
  await turn();
  t.equal(next.state, 'pending', 'the next 128 KiB wait for tokens');
  clock.advance(124);
  await turn();
  t.equal(next.state, 'pending', 'still waiting after 124 ms');
  clock.advance(1);
  await turn();
  t.equal(next.state, 'resolved', 'and pass at 125 ms: 128 KiB at 1 MiB/s');
  t.equal(bucket.waits, 1, 'one take had to wait');
  t.equal(bucket.waitedMs, 125, 'for 125 ms of the clock');
});

t.test("a rate meter counts the last window's bytes per second and forgets older ones", async (t) => {
  const clock = new VirtualClock();
  const meter = new RateMeter(clock, 3000, 6);
  meter.add(10_000);
  t.equal(meter.bytesPerSec, 0, 'the slot being filled does not count yet');
  clock.advance(500);
  t.equal(meter.bytesPerSec, 4000, '10,000 bytes over the 2.5 s of finished slots');
  clock.advance(3000);
  t.equal(meter.bytesPerSec, 0, 'gone once out of the window');
  t.equal(meter.total, 10_000, 'the total keeps them');
});

t.test('parseRate reads bytes (binary) and bits (SI), and names a value it cannot read', async (t) => {
  t.equal(parseRate('10M'), 10 * MIB);
  t.equal(parseRate('500k'), 500 * 1024);
  t.equal(parseRate('100mbit'), 12_500_000);
  t.equal(parseRate('0'), 0);
  t.throws(() => parseRate('fast'), { code: 'P2P_BAD_REQUEST', message: /'fast' is not a rate/ });
});
