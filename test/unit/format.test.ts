import t from 'tap';
import { formatBytes, formatRate } from '../../cli/format.js';

t.test('human sizes and rates are rounded, bytes to whole bytes (issue 11: "111.11111111111111 B/s")', (t) => {
  t.equal(formatRate(1000 / 9), '111 B/s');
  t.equal(formatBytes(100 / 3), '33 B');
  t.equal(formatBytes(0), '0 B');
  t.equal(formatBytes(1023), '1023 B');
  t.equal(formatBytes(1024), '1.0 KiB');
  t.equal(formatRate(5e6 / 3), '1.6 MiB/s');
  t.equal(formatBytes(200 * 1024 * 1024), '200 MiB');
  t.end();
});
