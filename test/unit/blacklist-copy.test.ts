/**
 * peerd/blacklist-cache.ts with its copy in the peer database: the list kept is in force at once, a
 * re-sync sends the digest of the list held, and a change that failed to reach the copy is mended by
 * writing the copy whole at the next sync. A stand-in tracker session answers BLACKLIST_SYNC.
 */
import { EventEmitter } from 'node:events';
import t from 'tap';
import { BlacklistCache } from '../../peerd/blacklist-cache.js';
import type { TrackerClient } from '../../peerd/tracker-client.js';
import { blacklistDigest, silentLogger, type Body } from '../../protocol/index.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);

class FakeTracker extends EventEmitter {
  state = 'connected';
  asked: string[] = [];
  constructor(private readonly answer: (version: string) => Body<'BLACKLIST_STATE'>) {
    super();
  }
  request(name: string, body: { version: string }): Promise<Body<'BLACKLIST_STATE'>> {
    if (name !== 'BLACKLIST_SYNC') throw new Error(`unexpected ${name}`);
    this.asked.push(body.version);
    return Promise.resolve(this.answer(body.version));
  }
}

function copyWith(targets: string[], failures = 0) {
  const held = new Set(targets);
  let failing = failures;
  return {
    held,
    blacklistCopy: () => [...held],
    changeBlacklistCopy(added: readonly string[], removed: readonly string[]): void {
      if (failing-- > 0) throw new Error('disk full');
      for (const x of added) held.add(x);
      for (const x of removed) held.delete(x);
    },
    replaceBlacklistCopy(all: Iterable<string>): void {
      held.clear();
      for (const x of all) held.add(x);
    },
  };
}

t.test('the copy is in force at once, and a re-sync of an unchanged list sends its digest and takes nothing', async (t) => {
  const tracker = new FakeTracker(() => ({ version: '3.9', changed: false, targets: [] }));
  const cache = new BlacklistCache(tracker as unknown as TrackerClient, silentLogger, { copy: copyWith([A, B]) });
  t.ok(cache.knownBanned(A, '10.0.0.1') && cache.knownBanned(B, '10.0.0.2'), 'both kept bans apply before any tracker answers');
  t.notOk(cache.listIsCurrent, 'but the list is not taken as current yet');
  await cache.sync();
  t.same(tracker.asked, [blacklistDigest([A, B])], 'the sync sent the digest of the list held');
  t.ok(cache.listIsCurrent, 'and, told it is unchanged, the list is current');
  t.equal(cache.syncedVersion, '3.9');
});

t.test('a change that failed to reach the copy is written whole at the next sync', async (t) => {
  const copy = copyWith([A], 1);
  const tracker = new FakeTracker((version) => (version === blacklistDigest([A, B]) ? { version: '4.1', changed: false, targets: [] } : { version: '4.1', changed: true, targets: [{ target: A }, { target: B }] }));
  const cache = new BlacklistCache(tracker as unknown as TrackerClient, silentLogger, { copy });
  tracker.emit('blacklist', { added: [{ target: B }], removed: [] });
  t.ok(cache.knownBanned(B, ''), 'the pushed ban applies');
  t.same([...copy.held], [A], 'though the copy missed it (the write failed)');
  await cache.sync();
  t.same(tracker.asked, [blacklistDigest([A, B])], 'the sync sent the digest of the list in memory');
  t.same([...copy.held].sort(), [A, B], 'and the copy was written whole after it');
  tracker.emit('blacklist', { added: [], removed: [{ target: A }] });
  t.same([...copy.held], [B], 'later changes reach the copy as before');
});
