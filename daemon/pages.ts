/**
 * One page of an admin listing (the blacklist, the reports): the items in their order, at most `limit`
 * (at least one) and about `maxBytes` as the protocol encodes them (`bytesOf` estimates one item), but
 * never empty while items remain. `more`: whether items were left for the next page.
 */
export function fitPage<T>(items: Iterable<T>, limit: number, maxBytes: number, bytesOf: (item: T) => number): { page: T[]; more: boolean } {
  const page: T[] = [];
  let bytes = 0;
  for (const item of items) {
    bytes += bytesOf(item);
    if (page.length >= Math.max(1, limit) || (bytes > maxBytes && page.length > 0)) return { page, more: true };
    page.push(item);
  }
  return { page, more: false };
}
