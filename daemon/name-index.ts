/**
 * A substring index over file names, for SEARCH (a name contains the text, case-insensitively). Each item
 * (a file) has a slot; every distinct trigram of a name's lower-case form lists the slots of the items
 * with a name containing it (Postings: varint differences, about 1.3 bytes a posting), and names too short
 * for a trigram are listed under SHORT. A search of three characters or more reads the shortest list among
 * its text's trigrams and checks each candidate's names, so it costs the rarest trigram's list, not the
 * whole table: at 2,000,000 names a full scan took 180 ms, the index well under a millisecond for a rare
 * text. A text of one or two characters reads the lists whose trigram contains it, and SHORT; the empty
 * text scans the items in slot order (stopping at the limit).
 *
 * Removals are lazy: a removed name leaves its postings behind, and a slot freed by one item may be given
 * to another, so a search checks every candidate against its live names and skips repeats. Each removal
 * owes the compaction of twice as many postings as it left behind (one list at a time, round robin), so
 * stale postings stay a bounded fraction of the live ones however long the churn runs. The debt is paid
 * between turns of the event loop, COMPACTION_SLICE postings a turn: a tracker dropping a thousand
 * departed peers at once left about 700,000 postings to check, 3 s of work that, paid inside the write,
 * froze it past --failover-ms (issue 12). Only past STALE_LIMIT times as many stale postings as live ones
 * does each removal pay its share at once, so memory stays bounded even in a loop that never yields.
 * (The stale count is a lower bound: two names of one item that share a trigram post its slot twice, and
 * compaction drops the second as stale without it having been counted; searches are exact regardless.)
 */

/**
 * One trigram's postings: the slots in the order they were added, each written as the difference from
 * the one before it (zigzag, since a freed slot given again is lower), in 7-bit groups. Slots are mostly
 * added in increasing order and most lists are long, so a posting takes 1.26 bytes on the fleet
 * benchmark's names (2,000,000 of them), against 4 as an Int32Array: about 75 bytes less per file.
 */
class Postings {
  bytes = new Uint8Array(8);
  /** Bytes in use. */
  end = 0;
  /** Postings held (live and stale). */
  count = 0;
  /** The last slot added, which the next difference is taken from. */
  last = 0;
  /** The addName call that last added to this list: a name's repeated trigrams post its slot once. */
  stamp = 0;

  add(slot: number): void {
    if (this.end + 5 > this.bytes.length) {
      // Half again, not double: the slack of 2,000,000 names' lists is megabytes.
      const grown = new Uint8Array(Math.ceil(this.bytes.length * 1.5) + 8);
      grown.set(this.bytes.subarray(0, this.end));
      this.bytes = grown;
    }
    this.end = writeDelta(this.bytes, this.end, slot - this.last);
    this.last = slot;
    this.count++;
  }
}

/** Writes `delta` at `at` as a zigzag varint; returns where the next one goes. */
function writeDelta(bytes: Uint8Array, at: number, delta: number): number {
  let z = delta >= 0 ? delta * 2 : -delta * 2 - 1;
  while (z >= 128) {
    bytes[at++] = (z % 128) | 128;
    z = Math.floor(z / 128);
  }
  bytes[at++] = z;
  return at;
}

/**
 * Reads postings in order: `next()` is the next slot, or -1 at `end` (a list's end when the reader was
 * made, unless moved on). One reader object per walk; the walk itself allocates nothing.
 */
class PostingsReader {
  private at = 0;
  private slot = 0;

  /** `bytes` and `end` follow the list when it grows during a walk that spans turns (compaction). */
  constructor(
    public bytes: Uint8Array,
    public end: number,
  ) {}

  next(): number {
    if (this.at >= this.end) return -1;
    const { bytes } = this;
    let b = bytes[this.at++]!;
    let z = b & 127;
    for (let scale = 128; b >= 128; scale *= 128) {
      b = bytes[this.at++]!;
      z += (b & 127) * scale;
    }
    this.slot += z % 2 === 0 ? z / 2 : -(z + 1) / 2;
    return this.slot;
  }
}

/** Where the compaction of one list has got to: the slots kept so far are rewritten into `out`. */
interface Compaction {
  key: number;
  /** The key's trigram (undefined for SHORT). */
  trigram: string | undefined;
  list: Postings;
  reader: PostingsReader;
  /** The kept postings, written afresh (each difference is from the last one kept). */
  out: Postings;
  seen: Set<number>;
}

/** Postings compacted per posting a removal leaves stale (see the top of this file). */
const COMPACTION_RATE = 2;
/** Postings checked per turn of the event loop while compaction is owed (about 5 ms of work). */
const COMPACTION_SLICE = 2048;
/** Stale postings past this many times the live ones: each removal pays its own share at once. */
const STALE_LIMIT = 2;
/** Candidates few enough to check by name rather than read another list to cut them. */
const FEW_CANDIDATES = 64;
/** Postings a search reads to narrow its candidates, at most, as a multiple of the shortest list's. */
const NARROWING_BUDGET = 16;

export class NameIndex<T> {
  /** Postings by trigram key, and under SHORT the slots of names too short to have a trigram. */
  private readonly lists = new Map<number, Postings>();
  private readonly items: Array<T | undefined> = [];
  private readonly freeSlots: number[] = [];
  private postings = 0;
  /** Counts addName calls (see Postings.stamp). */
  private addStamp = 0;
  private stale = 0;
  private compactionDebt = 0;
  private cursor: IterableIterator<[number, Postings]> | undefined;
  private compaction: Compaction | undefined;
  private compactionTurn: NodeJS.Immediate | undefined;
  /** Per slot, the last search that marked it (see markSlots). */
  private marks = new Uint32Array(0) as Uint32Array<ArrayBuffer>;
  private markGeneration = 0;
  /** Per slot, the last search that visited it (see visitStamp). */
  private visited = new Uint32Array(0) as Uint32Array<ArrayBuffer>;
  private visitGeneration = 0;

  /** `namesOf`: an item's live names, as the search must match them now (one name as a plain string). */
  constructor(private readonly namesOf: (item: T) => string | Iterable<string>) {}

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
    // Every tracker applies each REGISTER's names here (100 a peer), so no Set of keys is made per name:
    // a list stamped by this call already has the slot.
    const stamp = ++this.addStamp;
    const lower = name.toLowerCase();
    if (lower.length < 3) return this.post(SHORT, slot, stamp);
    for (let i = 0; i + 3 <= lower.length; i++) this.post(trigramKey(lower, i), slot, stamp);
  }

  private post(key: number, slot: number, stamp: number): void {
    let list = this.lists.get(key);
    if (!list) this.lists.set(key, (list = new Postings()));
    if (list.stamp === stamp) return;
    list.stamp = stamp;
    list.add(slot);
    this.postings++;
  }

  /** An item no longer has `name` (call once its names have changed: the postings it leaves are stale). */
  removeName(name: string): void {
    const left = indexKeys(name).size;
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
    this.visited = new Uint32Array(0);
    this.postings = this.stale = this.compactionDebt = 0;
    this.cursor = undefined;
    this.compaction = undefined;
    if (this.compactionTurn) clearImmediate(this.compactionTurn);
    this.compactionTurn = undefined;
  }

  /**
   * Calls `visit(item, name)` for each live name containing `text` (case-insensitive), each (item, name)
   * once, until `visit` returns false.
   *
   * - Three characters or more: the candidates are the slots of the text's rarest trigram, kept only if
   *   the other trigrams' lists hold them too (as many lists as a budget allows).
   * - One or two: every list whose trigram contains the text, and the short names. A name containing it
   *   has such a trigram (where the text ends the name, the trigram ending with it), so this reads only
   *   the names that have it, not the whole table (two letters in 2% of 2,000,000 names: 5 ms against 45).
   * - The empty text: every item, in slot order.
   */
  search(text: string, visit: (item: T, name: string) => boolean): void {
    const needle = text.toLowerCase();
    const contains = containsIgnoringCase(needle);
    if (needle.length === 0) {
      const { items } = this;
      for (let slot = 0; slot < items.length; slot++) {
        const item = items[slot];
        if (item !== undefined && !this.visitNames(item, contains, visit)) return;
      }
      return;
    }
    const visited = this.visitStamp();
    if (needle.length < 3) {
      for (const [key, list] of this.lists) {
        if ((key === SHORT || trigramOf(key).includes(needle)) && !this.visitList(list, undefined, visited, contains, visit)) return;
      }
      return;
    }
    const lists: Postings[] = [];
    for (const key of trigramKeys(needle)) {
      const list = this.lists.get(key);
      if (!list) return; // no name has this trigram, so none contains the text
      lists.push(list);
    }
    lists.sort((a, b) => a.count - b.count);
    const shortest = lists[0]!;
    // Only slots in every list are candidates: marking lists and reading the shortest is a pass over
    // integers (a few ns a posting), where checking a candidate's names costs a string search and two
    // cache misses (about 0.5 µs). A word's trigrams often list the same names ('sal', 'ale', 'les'), so
    // one other list may cut nothing: 'sales-handbook' checked 37,000 names for 1,550 hits with one list
    // and about 1,600 with all of them. The lists read past the second are bounded, and reading stops
    // once few candidates are left.
    let mark: number | undefined;
    if (lists.length > 1 && shortest.count > FEW_CANDIDATES) {
      mark = this.markSlots(lists[1]!);
      let read = lists[1]!.count;
      for (let i = 2; i < lists.length && read + lists[i]!.count <= NARROWING_BUDGET * shortest.count; i++) {
        const narrowed = this.narrowMarks(lists[i]!, mark);
        if (!narrowed) break;
        mark = narrowed.mark;
        read += lists[i]!.count;
        if (narrowed.kept <= FEW_CANDIDATES) break;
      }
    }
    this.visitList(shortest, mark, visited, contains, visit);
  }

  /** Visits the live names of the slots `list` holds (those `mark` marked, with one), each slot once a search. */
  private visitList(list: Postings, mark: number | undefined, visited: number, contains: (name: string) => boolean, visit: (item: T, name: string) => boolean): boolean {
    const reader = new PostingsReader(list.bytes, list.end);
    const { marks, items } = this;
    for (let slot = reader.next(); slot >= 0; slot = reader.next()) {
      // A slot can be listed twice (a stale posting, then the slot given again).
      if ((mark !== undefined && marks[slot] !== mark) || this.visited[slot] === visited) continue;
      this.visited[slot] = visited;
      const item = items[slot];
      if (item !== undefined && !this.visitNames(item, contains, visit)) return false;
    }
    return true;
  }

  /** Stamps every slot in `list` with a fresh mark (one array reused by every search) and returns the mark. */
  private markSlots(list: Postings): number {
    this.marks = fitSlots(this.marks, this.items.length);
    if (++this.markGeneration === 2 ** 32) {
      this.marks.fill(0);
      this.markGeneration = 1;
    }
    const mark = this.markGeneration;
    const { marks } = this;
    const reader = new PostingsReader(list.bytes, list.end);
    for (let slot = reader.next(); slot >= 0; slot = reader.next()) marks[slot] = mark;
    return mark;
  }

  /**
   * Stamps with a fresh mark the slots of `list` that carry `mark` (the slots in every list marked so
   * far); returns the new mark and how many slots carry it, or undefined when the marks would wrap (the
   * search goes on with `mark`: fewer lists narrow it, and the names decide as always).
   */
  private narrowMarks(list: Postings, mark: number): { mark: number; kept: number } | undefined {
    if (this.markGeneration + 1 >= 2 ** 32) return undefined;
    const next = ++this.markGeneration;
    const { marks } = this;
    const reader = new PostingsReader(list.bytes, list.end);
    let kept = 0;
    for (let slot = reader.next(); slot >= 0; slot = reader.next()) {
      if (marks[slot] === mark) {
        marks[slot] = next;
        kept++;
      }
    }
    return { mark: next, kept };
  }

  /** A fresh stamp for the slots one search visits. */
  private visitStamp(): number {
    this.visited = fitSlots(this.visited, this.items.length);
    if (++this.visitGeneration === 2 ** 32) {
      this.visited.fill(0);
      this.visitGeneration = 1;
    }
    return this.visitGeneration;
  }

  private visitNames(item: T, contains: (name: string) => boolean, visit: (item: T, name: string) => boolean): boolean {
    const names = this.namesOf(item);
    if (typeof names === 'string') return !contains(names) || visit(item, names);
    for (const name of names) if (contains(name) && !visit(item, name)) return false;
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
        const [key, list] = next;
        this.compaction = { key, trigram: key === SHORT ? undefined : trigramOf(key), list, reader: new PostingsReader(list.bytes, list.end), out: new Postings(), seen: new Set() };
      }
      const c = this.compaction;
      const { list, reader, out } = c;
      // Postings added since the last slice are read too (the list may have grown into new bytes).
      reader.bytes = list.bytes;
      reader.end = list.end;
      let done = false;
      for (; budget > 0; budget--) {
        const slot = reader.next();
        if (slot < 0) {
          done = true;
          break;
        }
        const item = this.items[slot];
        if (item !== undefined && !c.seen.has(slot) && this.hasKey(item, c.trigram)) {
          c.seen.add(slot);
          out.add(slot);
        }
      }
      if (!done) continue;
      const dropped = list.count - out.count;
      this.postings -= dropped;
      this.stale = Math.max(0, this.stale - dropped);
      if (out.count === 0) this.lists.delete(c.key);
      else {
        list.bytes = out.end * 2 < out.bytes.length ? out.bytes.slice(0, out.end + 8) : out.bytes;
        list.end = out.end;
        list.count = out.count;
        list.last = out.last;
      }
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

  /** Whether one of the item's live names is listed under `trigram` (or, undefined, is too short for one). */
  private hasKey(item: T, trigram: string | undefined): boolean {
    const names = this.namesOf(item);
    if (typeof names === 'string') return listedUnder(names, trigram);
    for (const name of names) if (listedUnder(name, trigram)) return true;
    return false;
  }
}

function listedUnder(name: string, trigram: string | undefined): boolean {
  const lower = name.toLowerCase();
  return trigram === undefined ? lower.length < 3 : lower.includes(trigram);
}

/** A per-slot array at least `slots` long (grown to twice that, so a growing table reallocates rarely). */
function fitSlots(array: Uint32Array<ArrayBuffer>, slots: number): Uint32Array<ArrayBuffer> {
  if (array.length >= slots) return array;
  const grown = new Uint32Array(Math.max(1024, slots * 2));
  grown.set(array);
  return grown;
}

const NON_ASCII = /[^\x00-\x7f]/;

/**
 * Whether a name contains `needle` (already lower case) once lower-cased: `name.toLowerCase().includes`,
 * without making the lower-case copy when it can. For an ASCII needle a case-insensitive regular
 * expression decides every ASCII name (it folds only ASCII letters onto ASCII letters, as toLowerCase
 * does); a name with other characters that it does not match is checked the long way, since some of
 * them lower-case to ASCII (the Kelvin sign to k, İ to i and a combining dot).
 */
export function containsIgnoringCase(needle: string): (name: string) => boolean {
  if (NON_ASCII.test(needle)) return (name) => name.toLowerCase().includes(needle);
  const pattern = new RegExp(needle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'i');
  return (name) => pattern.test(name) || (NON_ASCII.test(name) && name.toLowerCase().includes(needle));
}

/** The key under which names too short for a trigram are listed (no trigram's key is negative). */
const SHORT = -1;

/** The keys a name is listed under: its lower-case form's trigrams, or SHORT when it has none. */
function indexKeys(name: string): Set<number> {
  const keys = trigramKeys(name.toLowerCase());
  if (keys.size === 0) keys.add(SHORT);
  return keys;
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
  for (let i = 0; i + 3 <= s.length; i++) keys.add(trigramKey(s, i));
  return keys;
}

/** The key of the trigram of `s` at `at` (see trigramKeys). */
function trigramKey(s: string, at: number): number {
  const a = s.charCodeAt(at);
  const b = s.charCodeAt(at + 1);
  const c = s.charCodeAt(at + 2);
  return a < 1024 && b < 1024 && c < 1024 ? (a << 20) | (b << 10) | c : 2 ** 48 + a * 2 ** 32 + b * 2 ** 16 + c;
}
