/**
 * A backup that was copying a snapshot when its main went away does not stay "syncing" for good. A main
 * sends a snapshot's parts with nothing else in between, so an append from another main, or from the
 * same rank in a later term, means the copy under way will never finish; before, the half-received copy
 * kept the backup syncing (never ready, never handed command back) until some main sent it a new one.
 */
import t from 'tap';
import type { RaftMessage } from '../../daemon/raft/messages.js';
import type { RaftNode } from '../../daemon/raft/node.js';
import { memoryRaftNode, seededStream } from '../helpers/raft.js';

const HEARTBEAT_MS = 50;
const FAILOVER_MS = 250;

/** Rank 2 of three, which records what it sends. */
function backup(): { node: RaftNode; sent: Array<{ to: number; m: RaftMessage }> } {
  const sent: Array<{ to: number; m: RaftMessage }> = [];
  const node = memoryRaftNode({ rank: 2, size: 3, heartbeatMs: HEARTBEAT_MS, failoverMs: FAILOVER_MS, random: seededStream(3), send: (to, m) => sent.push({ to, m }) });
  node.tick(1);
  return { node, sent };
}

/** The first part of a snapshot of several, as rank `from` sends it in `term` (terms are striped by rank: term % 3 is the rank). */
function firstPart(term: number): RaftMessage {
  const head = { k: 'head', index: 40, term, epoch: 7 };
  return { t: 'snapshot', term, id: 1, part: 0, done: false, records: `${JSON.stringify(head)}\n`, agrees: false, want: 0 };
}

/** A heartbeat from a main whose log this backup matches (it has nothing yet: index 0 matches). */
function heartbeat(term: number): RaftMessage {
  return { t: 'append', term, prev: { index: 0, term: 0, epoch: 0 }, entries: [], commit: 0 };
}

t.test('a snapshot from a main that went away is dropped when another main takes over', (t) => {
  const { node } = backup();
  node.receive(10, 0, firstPart(3));
  t.equal(node.role, 'syncing', 'copying the snapshot, the backup is syncing');
  node.receive(20, 1, heartbeat(4));
  t.equal(node.role, 'backup', 'the new main in term 4 sends appends: the backup follows it, ready');
  t.end();
});

t.test('a snapshot is dropped when its own main, elected again, sends appends in its new term', (t) => {
  const { node } = backup();
  node.receive(10, 0, firstPart(3));
  node.receive(20, 0, heartbeat(6));
  t.equal(node.role, 'backup', 'rank 0 leads again in term 6 and sends appends: the copy of term 3 is dropped');
  t.end();
});

t.test('an append from the main sending the snapshot, in the same term, leaves the snapshot under way', (t) => {
  // It does not send one while a snapshot is on its way; one sent just before the first part can arrive
  // after it, and must not cost the copy.
  const { node, sent } = backup();
  node.receive(10, 0, firstPart(3));
  node.receive(15, 0, heartbeat(3));
  t.equal(node.role, 'syncing', 'still copying');
  sent.length = 0;
  node.receive(20, 0, { ...firstPart(3), part: 1, records: '' } as RaftMessage);
  const reply = sent.find((s) => s.to === 0 && s.m.t === 'snapshot-reply');
  t.ok(reply && reply.m.t === 'snapshot-reply' && reply.m.ok, 'and its next part is taken');
  t.end();
});

t.test('a snapshot refused part way leaves the backup ready again, not syncing', (t) => {
  const { node } = backup();
  node.receive(10, 0, firstPart(3));
  node.receive(20, 0, { ...firstPart(3), part: 2 } as RaftMessage); // part 1 lost: the copy is refused
  t.equal(node.role, 'backup', 'the backup follows its main, which starts the copy over');
  t.end();
});

t.test('parts of the snapshot in progress are still taken from its main', (t) => {
  const { node, sent } = backup();
  node.receive(10, 0, firstPart(3));
  sent.length = 0;
  node.receive(20, 0, { ...firstPart(3), part: 1, records: '' } as RaftMessage);
  const reply = sent.find((s) => s.to === 0 && s.m.t === 'snapshot-reply');
  t.ok(reply && reply.m.t === 'snapshot-reply' && reply.m.ok, 'part 1 from the same main in the same term is taken');
  t.equal(node.role, 'syncing', 'and the backup is still copying');
  t.end();
});
