/**
 * The order `p2p search` lists files in: by name ignoring case and accents, then by the exact name, then
 * by file id. The peer daemon sorts a tracker's SEARCH answer this way before showing it; the tracker
 * answers in its index's order, since sorting 10,000 hits took it 5-6 ms of its one thread per search
 * (issue 12), work each asking peer can do for itself.
 *
 * Many strings are sorted most significant characters first (MSD radix), five characters at a time
 * packed into numbers that V8 sorts natively; a comparator orders only small groups. 10,000 names sorted
 * with a comparator alone took 5-7 ms, 4.8 ms this way.
 */

/** `items` in name order (a new array): `nameOf` gives each one's name, `idOf` its file id (hex, say). */
export function inNameOrder<T>(items: readonly T[], nameOf: (item: T) => string, idOf: (item: T) => string): T[] {
  const names = items.map(nameOf);
  const keys = names.map(sortKey);
  const order = (a: number, b: number): number => compare(keys[a]!, keys[b]!) || compare(names[a]!, names[b]!) || compare(idOf(items[a]!), idOf(items[b]!));
  return sortByKeys(keys, order).map((i) => items[i]!);
}

const ASCII = /^[\x00-\x7f]*$/;
const ASCII_NO_CAPITALS = /^[\x00-\x40\x5b-\x7f]*$/;

/** A name as it sorts: lower case, accents dropped (the name itself, not a copy, when it is that already). */
export function sortKey(name: string): string {
  if (ASCII_NO_CAPITALS.test(name)) return name;
  return ASCII.test(name) ? name.toLowerCase() : name.normalize('NFKD').replace(/\p{M}/gu, '').toLowerCase();
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The positions 0..keys.length-1, ordered by `keys`; ties, and what the packed numbers cannot tell apart,
 * by `order`, which must order by key first.
 */
export function sortByKeys(keys: readonly string[], order: (a: number, b: number) => number): number[] {
  const positions = keys.map((_, i) => i);
  sortRange({ positions, keys, order, packed: new Float64Array(keys.length), moved: new Int32Array(keys.length) }, 0, keys.length, 0);
  return positions;
}

/** Ranges this short are sorted by the comparator. */
const SMALL_RANGE = 32;
/** Positions a packed number has room for below its five characters (35 bits; a double holds 53). */
const PACKED_POSITIONS = 2 ** 15;
const PACKED_CHARS = 5;

interface KeySort {
  /** Indexes into `keys`, sorted in place. */
  positions: number[];
  keys: readonly string[];
  /** Orders two indexes by key first (then whatever breaks a tie). */
  order: (a: number, b: number) => number;
  /** Scratch as long as `positions`: a range uses its own part, so nested ranges never overlap. */
  packed: Float64Array;
  moved: Int32Array;
}

/**
 * Sorts `positions[lo..hi)` (whose keys agree before character `from`) by key, ties by `order`. The
 * range's shared prefix is skipped, the next five characters of each key are packed into a number (base
 * 128, with the position in the range below them) and the numbers sorted natively; each run of equal
 * characters is then sorted the same way from five characters on. A run whose characters include the end
 * of its keys (0) or a character past ASCII (127 stands for all of them, so their order is not in the
 * number) is sorted by `order` instead.
 */
function sortRange(s: KeySort, lo: number, hi: number, from: number): void {
  const { positions, keys, packed, moved } = s;
  const n = hi - lo;
  if (n < SMALL_RANGE || n > PACKED_POSITIONS) return compareRange(positions, lo, hi, s.order);
  const at = from + sharedPrefixLength(positions, lo, hi, keys, from);
  for (let k = 0; k < n; k++) packed[lo + k] = packChars(keys[positions[lo + k]!]!, at) * PACKED_POSITIONS + k;
  packed.subarray(lo, hi).sort();
  for (let k = lo; k < hi; k++) moved[k] = positions[k]!;
  for (let k = lo; k < hi; k++) positions[k] = moved[lo + (packed[k]! % PACKED_POSITIONS)]!;
  for (let i = lo; i < hi; ) {
    const chars = Math.floor(packed[i]! / PACKED_POSITIONS);
    let j = i + 1;
    while (j < hi && Math.floor(packed[j]! / PACKED_POSITIONS) === chars) j++;
    if (j - i > 1) {
      if (endsOrLeavesAscii(chars)) compareRange(positions, i, j, s.order);
      else sortRange(s, i, j, at + PACKED_CHARS);
    }
    i = j;
  }
}

function compareRange(positions: number[], lo: number, hi: number, order: (a: number, b: number) => number): void {
  const sorted = positions.slice(lo, hi).sort(order);
  for (let k = lo; k < hi; k++) positions[k] = sorted[k - lo]!;
}

/** How many characters from `from` on every key of the range shares. */
function sharedPrefixLength(positions: readonly number[], lo: number, hi: number, keys: readonly string[], from: number): number {
  const first = keys[positions[lo]!]!;
  let length = first.length - from;
  for (let k = lo + 1; k < hi && length > 0; k++) {
    const key = keys[positions[k]!]!;
    let i = 0;
    while (i < length && from + i < key.length && key.charCodeAt(from + i) === first.charCodeAt(from + i)) i++;
    length = i;
  }
  return Math.max(0, length);
}

/**
 * Characters `at` to `at + 5` of `key` in base 128, so that where two numbers differ the keys differ the
 * same way: 0 past its end (a prefix sorts first), and 127 for any character from 127 up, with zeros
 * after it (keys that differ only there or later tie, and go to the comparator).
 */
function packChars(key: string, at: number): number {
  let n = 0;
  let ended = false;
  for (let i = at; i < at + PACKED_CHARS; i++) {
    const c: number = ended || i >= key.length ? 0 : Math.min(127, key.charCodeAt(i));
    ended ||= c === 127;
    n = n * 128 + c;
  }
  return n;
}

function endsOrLeavesAscii(chars: number): boolean {
  for (let k = 0; k < PACKED_CHARS; k++, chars = Math.floor(chars / 128)) {
    const c = chars % 128;
    if (c === 0 || c === 127) return true;
  }
  return false;
}

