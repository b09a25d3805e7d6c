/**
 * A substring index over file names, for SEARCH (a name contains the text, case-insensitively). Each item
 * (a file) has a slot; every distinct trigram of a name's lower-case form lists the slots of the items
 * with a name containing it, in an Int32Array (4 bytes a posting). A search reads the shortest list among
 * its text's trigrams and checks each candidate's names, so it costs the rarest trigram's list, not the
 * whole table: at 2,000,000 names a full scan took 180 ms, the index well under a millisecond for a rare
 * text. Texts shorter than three characters, and the empty text, scan the items in slot order (stopping
 * at the limit).
 *
 * Removals are lazy: a removed name leaves its postings behind, and a slot freed by one item may be given
 * to another, so a search checks every candidate against its live names and skips repeats. Each removal
 * owes the compaction of twice as many postings as it left behind (one list at a time, round robin), so
 * stale postings stay a bounded fraction of the live ones however long the churn runs. The debt is paid
 * between turns of the event loop, COMPACTION_SLICE postings a turn: a tracker dropping a thousand
 * departed peers at once left about 700,000 postings to check, 3 s of work that, paid inside the write,
 * froze it past --failover-ms (issue 12). Only past STALE_LIMIT times as many stale postings as live ones
 * does each removal pay its share at once, so memory stays bounded even in a loop that never yields.
 */

interface Postings {
  slots: Int32Array;
  length: number;
}

/** Where the compaction of one list has got to: kept slots are copied down from `read` to `write`. */
interface Compaction {
  key: number;
  trigram: string;
  list: Postings;
  read: number;
  write: number;
  seen: Set<number>;
}

/** Postings compacted per posting a removal leaves stale (see the top of this file). */
const COMPACTION_RATE = 2;
/** Postings checked per turn of the event loop while compaction is owed (about 5 ms of work). */
const COMPACTION_SLICE = 2048;
/** Stale postings past this many times the live ones: each removal pays its own share at once. */
const STALE_LIMIT = 2;

export class NameIndex<T> {
  private readonly lists = new Map<number, Postings>();
  private readonly items: Array<T | undefined> = [];
  private readonly freeSlots: number[] = [];
  private postings = 0;
  private stale = 0;
  private compactionDebt = 0;
  private cursor: IterableIterator<[number, Postings]> | undefined;
  private compaction: Compaction | undefined;
  private compactionTurn: NodeJS.Immediate | undefined;
  /** Per slot, the last search that marked it (see markSlots). */
  private marks = new Uint32Array(0);
  private markGeneration = 0;

  /** `namesOf`: an item's live names, as the search must match them now. */
  constructor(private readonly namesOf: (item: T) => Iterable<string>) {}

  /** Gives `item` a slot (its names are added with addName). */
  insert(item: T): number {
    const slot = this.freeSlots.pop() ?? this.items.length;
    this.items[slot] = item;
    return slot;
  }

  /** Frees a slot whose item has no names left (removeName each one first). */
  release(slot: number): void {
    this.items[slot] = undefined;
    this.freeSlots.push(slot);
  }

  addName(slot: number, name: string): void {
    for (const key of trigramKeys(name.toLowerCase())) {
      let list = this.lists.get(key);
      if (!list) this.lists.set(key, (list = { slots: new Int32Array(2), length: 0 }));
      if (list.length === list.slots.length) {
        // Half again, not double: the slack of 2,000,000 names' lists is tens of megabytes.
        const grown = new Int32Array(Math.ceil(list.slots.length * 1.5) + 1);
        grown.set(list.slots);
        list.slots = grown;
      }
      list.slots[list.length++] = slot;
      this.postings++;
    }
  }

  /** An item no longer has `name` (call once its names have changed: the postings it leaves are stale). */
  removeName(name: string): void {
    const left = trigramKeys(name.toLowerCase()).size;
    this.stale += left;
    this.compactionDebt += COMPACTION_RATE * left;
    if (this.stale > STALE_LIMIT * (this.postings - this.stale)) this.compactSome(COMPACTION_RATE * left);
    else if (this.compactionDebt >= 1024) this.compactionTurn ??= setImmediate(() => this.compactTurn()).unref();
  }

  /** One turn's slice of the compaction owed; the next turn takes the next slice. */
  private compactTurn(): void {
    this.compactionTurn = undefined;
    this.compactSome(Math.min(this.compactionDebt, COMPACTION_SLICE));
    if (this.compactionDebt > 0 && this.stale > 0) this.compactionTurn = setImmediate(() => this.compactTurn()).unref();
  }

  /** Postings held, and how many of them are stale (for tests and the memory figures). */
  get counts(): { postings: number; stale: number; lists: number } {
    return { postings: this.postings, stale: this.stale, lists: this.lists.size };
  }

  forgetAll(): void {
    this.lists.clear();
    this.items.length = 0;
    this.freeSlots.length = 0;
    this.marks = new Uint32Array(0);
    this.postings = this.stale = this.compactionDebt = 0;
    this.cursor = undefined;
    this.compaction = undefined;
    if (this.compactionTurn) clearImmediate(this.compactionTurn);
    this.compactionTurn = undefined;
  }

  /**
   * Calls `visit(item, name)` for each live name containing `text` (case-insensitive), each (item, name)
   * once, until `visit` returns false.
   */
  search(text: string, visit: (item: T, name: string) => boolean): void {
    const needle = text.toLowerCase();
    const keys = trigramKeys(needle);
    if (keys.size === 0) {
      for (const item of this.items) if (item !== undefined && !this.visitNames(item, needle, visit)) return;
      return;
    }
    const lists: Postings[] = [];
    for (const key of keys) {
      const list = this.lists.get(key);
      if (!list) return; // no name has this trigram, so none contains the text
      lists.push(list);
    }
    lists.sort((a, b) => a.length - b.length);
    const [shortest, next] = lists as [Postings, Postings | undefined];
    // With a second list, only slots in both are candidates: marking one list and reading the other is a
    // pass over integers, where checking every candidate's names would be a string search each.
    const mark = next && shortest.length > 64 ? this.markSlots(next) : undefined;
    const seen = new Set<T>();
    const { slots, length } = shortest;
    for (let i = 0; i < length; i++) {
      const slot = slots[i]!;
      if (mark !== undefined && this.marks[slot] !== mark) continue;
      const item = this.items[slot];
      if (item === undefined || seen.has(item)) continue;
      seen.add(item);
      if (!this.visitNames(item, needle, visit)) return;
    }
  }

  /** Stamps every slot in `list` with a fresh mark (one array reused by every search) and returns the mark. */
  private markSlots(list: Postings): number {
    if (this.marks.length < this.items.length) {
      const grown = new Uint32Array(Math.max(1024, this.items.length * 2));
      grown.set(this.marks);
      this.marks = grown;
    }
    if (++this.markGeneration === 2 ** 32) {
      this.marks.fill(0);
      this.markGeneration = 1;
    }
    const mark = this.markGeneration;
    const { slots, length } = list;
    for (let i = 0; i < length; i++) this.marks[slots[i]!] = mark;
    return mark;
  }

  private visitNames(item: T, needle: string, visit: (item: T, name: string) => boolean): boolean {
    for (const name of this.namesOf(item)) {
      if (name.toLowerCase().includes(needle) && !visit(item, name)) return false;
    }
    return true;
  }

  /** Pays `budget` of the compaction debt: walks the lists round robin, dropping postings no live name needs. */
  private compactSome(budget: number): void {
    this.compactionDebt = Math.max(0, this.compactionDebt - budget);
    if (this.stale === 0) this.compactionDebt = 0;
    while (budget > 0 && this.stale > 0) {
      if (!this.compaction) {
        const next = this.nextList();
        if (!next) return;
        this.compaction = { key: next[0], trigram: trigramOf(next[0]), list: next[1], read: 0, write: 0, seen: new Set() };
      }
      const c = this.compaction;
      const { list } = c;
      const end = Math.min(list.length, c.read + budget);
      budget -= end - c.read;
      for (; c.read < end; c.read++) {
        const slot = list.slots[c.read]!;
        const item = this.items[slot];
        if (item !== undefined && !c.seen.has(slot) && this.hasTrigram(item, c.trigram)) {
          c.seen.add(slot);
          list.slots[c.write++] = slot;
        }
      }
      if (c.read < list.length) continue;
      const dropped = list.length - c.write;
      list.length = c.write;
      this.postings -= dropped;
      this.stale = Math.max(0, this.stale - dropped);
      if (list.length === 0) this.lists.delete(c.key);
      else if (list.length * 4 < list.slots.length) list.slots = list.slots.slice(0, Math.max(2, list.length * 2));
      this.compaction = undefined;
    }
  }

  private nextList(): [number, Postings] | undefined {
    for (let attempt = 0; attempt < 2; attempt++) {
      const step = (this.cursor ??= this.lists.entries()).next();
      if (!step.done) return step.value;
      this.cursor = undefined;
    }
    return undefined;
  }

  private hasTrigram(item: T, trigram: string): boolean {
    for (const name of this.namesOf(item)) if (name.toLowerCase().includes(trigram)) return true;
    return false;
  }
}

/** The three characters a key stands for (trigramKeys' inverse). */
function trigramOf(key: number): string {
  if (key < 2 ** 30) return String.fromCharCode(key >>> 20, (key >>> 10) & 1023, key & 1023);
  const rest = key - 2 ** 48;
  return String.fromCharCode(Math.floor(rest / 2 ** 32), Math.floor(rest / 2 ** 16) % 2 ** 16, rest % 2 ** 16);
}

/**
 * The distinct trigrams of `s` (UTF-16 code units), each as one number: small integers (V8's fastest Map
 * keys) when all three units are below 1024, as they are in most names, else a wider number from 2^48 (exact in a double).
 */
export function trigramKeys(s: string): Set<number> {
  const keys = new Set<number>();
  for (let i = 0; i + 3 <= s.length; i++) {
    const a = s.charCodeAt(i);
    const b = s.charCodeAt(i + 1);
    const c = s.charCodeAt(i + 2);
    keys.add(a < 1024 && b < 1024 && c < 1024 ? (a << 20) | (b << 10) | c : 2 ** 48 + a * 2 ** 32 + b * 2 ** 16 + c);
  }
  return keys;
}
