/**
 * Issue 13: the peer daemon's tracker session runs on the injectable clock, and its reconnections take a
 * retry strategy. With no tracker reachable, a round of attempts fails, the strategy says how long to
 * wait, and the next round starts exactly when the (virtual) clock has moved that far, not before.
 */
import t from 'tap';
import { reconnectBackoff, TrackerClient } from '../../peerd/tracker-client.js';
import { silentLogger, VirtualClock } from '../../protocol/index.js';
import { turn } from '../helpers/net.js';
import { clientIdentity } from '../helpers/tls.js';
import { reservePorts, until } from '../helpers/wait.js';

t.test('reconnection rounds wait what the retry strategy says, on the clock the daemon is given', async (t) => {
  const clock = new VirtualClock();
  const [port] = await reservePorts(1); // nothing listens there: every attempt is refused at once
  const rounds: number[] = [];
  const client = new TrackerClient({
    trackers: [{ host: '127.0.0.1', port: port! }],
    ...clientIdentity(),
    advertisePort: () => 0,
    announce: () => [],
    logger: silentLogger,
    clock,
    retry: (failures) => {
      rounds.push(failures);
      return 1000;
    },
  });
  t.teardown(() => client.close());
  client.start();
  await until('the first round to fail', () => rounds.length === 1);
  clock.advance(999);
  for (let i = 0; i < 20; i++) await turn();
  t.same(rounds, [1], 'no new round before the strategy\'s 1000 ms have passed on the clock');
  clock.advance(1);
  await until('the second round to fail', () => rounds.length === 2);
  t.same(rounds, [1, 2], 'the second round starts at 1000 ms and counts its failure');
  t.equal(client.state, 'connecting', 'and the client keeps trying');
});

t.test('the default strategy: 200 ms doubling to 2 s, and 5 s after a ban', async (t) => {
  t.same([1, 2, 3, 4, 5, 9].map((n) => reconnectBackoff(n, false)), [200, 400, 800, 1600, 2000, 2000]);
  t.equal(reconnectBackoff(1, true), 5000);
});
