/**
 * Issue 12: a peer's event loop that stalls (a busy host, a long GC) must not make it leave a healthy
 * tracker. After a stall, Node runs expired timers before it reads the sockets, so a heartbeat's answer
 * can sit unread while its timeout fires; the session must survive that, and still end when the tracker
 * really is silent.
 */
import t from 'tap';
import pino from 'pino';
import { TrackerClient } from '../../peerd/tracker-client.js';
import { clientHandshake } from '../../peerd/handshake.js';
import { Connection, dial, generateKeyPair, TimeoutError } from '../../protocol/index.js';
import { clientIdentity, tlsAs } from '../helpers/tls.js';
import { TrackerCluster } from '../helpers/tracker-process.js';
import { until } from '../helpers/wait.js';

function busyWait(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end);
}

t.test("a heartbeat answered during our own stall keeps the session; a tracker that really stops answering is left", async (t) => {
  const cluster = await TrackerCluster.create(t, { size: 1 });
  const tracker = cluster.trackers[0]!;
  tracker.start();
  const warnings: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(String((JSON.parse(line) as { msg: string }).msg)) });
  const client = new TrackerClient({ trackers: [{ host: '127.0.0.1', port: tracker.port }], ...clientIdentity(), advertisePort: () => 9, announce: () => [], logger });
  t.teardown(() => client.close());
  let sessions = 0;
  client.on('session', () => sessions++);
  client.start();
  await until('the session', () => client.state === 'connected', 30_000);

  // Just after the next PING leaves, block this process for longer than the 750 ms a heartbeat may take:
  // the tracker answers at once, into a socket nobody reads until the stall ends.
  const request = Connection.prototype.request;
  let stalls = 0;
  let answered = 0;
  Connection.prototype.request = function (this: Connection, ...args: Parameters<Connection['request']>) {
    const reply = request.apply(this, args) as ReturnType<Connection['request']>;
    if (args[0] === 'PING') {
      void reply.then(() => answered++, () => undefined);
      if (stalls === 0) {
        stalls++;
        setImmediate(() => busyWait(1200));
      }
    }
    return reply;
  } as Connection['request'];
  t.teardown(() => {
    Connection.prototype.request = request;
  });
  await until('the stall and three heartbeats after it', () => stalls === 1 && answered >= 3, 10_000);
  t.equal(client.state, 'connected', 'the peer kept its session');
  t.equal(sessions, 1, 'on the same connection');
  t.notOk(warnings.some((w) => w.includes('did not answer a heartbeat')), 'and did not blame the tracker');

  // The real thing: the tracker stops (SIGSTOP), its socket stays open, nothing comes back.
  tracker.pause();
  await until('the peer to leave the silent tracker', () => warnings.some((w) => w.includes('did not answer a heartbeat')), 10_000);
  t.not(client.state, 'connected', 'a tracker that does not answer is left');
  tracker.resume();
});

t.test('a HELLO and a request answered during our own stall are taken, not timed out; a silent tracker still times out', async (t) => {
  const cluster = await TrackerCluster.create(t, { size: 1 });
  const tracker = cluster.trackers[0]!;
  tracker.start();
  const to = { host: '127.0.0.1', port: tracker.port };
  await until('the tracker to listen', () => dial(to, { connectTimeoutMs: 500, tls: tlsAs(undefined) }).then((c) => (c.destroy(), true), () => false), 30_000);
  const conn = await dial(to, { connectTimeoutMs: 3000, tls: tlsAs(generateKeyPair().keys) });
  t.teardown(() => conn.destroy());

  // HELLO with 300 ms to answer, then this process blocked for 900: the tracker (another process) answers
  // at once, into a socket nobody reads until the stall ends, and the timer is the first thing that runs
  // after it. Before, the peer gave up on a WELCOME it had already received (a 5,000-peer takeover in
  // bench:fleet dialled again and again for that).
  const hello = clientHandshake(conn, 9, 300);
  busyWait(900);
  const welcome = await hello;
  t.equal(welcome.role, 'primary', 'the WELCOME that came during the stall is taken');

  const lookup = conn.request('LOOKUP', { id: Buffer.alloc(32) }, 'LOOKUP_RESULT', { timeoutMs: 200 });
  busyWait(700);
  const outcome = await lookup.then(
    () => 'answered',
    (err: unknown) => (err instanceof TimeoutError ? 'timed out' : 'answered'),
  );
  t.equal(outcome, 'answered', 'so is the answer to a request');

  // Still a timeout where nothing comes back.
  tracker.pause();
  t.teardown(() => tracker.resume());
  const silent = conn.request('LOOKUP', { id: Buffer.alloc(32) }, 'LOOKUP_RESULT', { timeoutMs: 200 });
  await t.rejects(silent, TimeoutError, 'a request to a stopped tracker times out');
});
