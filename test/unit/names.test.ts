import t from 'tap';
import { safeFileName } from '../../peerd/peerd.js';
import { validateName } from '../../protocol/index.js';

t.test("names: only '.' and '..' mean another folder; dots inside a name are fine (issue 11)", (t) => {
  for (const ok of ['notes...txt', 'a..b', 'x.y', '...hidden-looking', 'ünï', 'a'.repeat(255)]) t.doesNotThrow(() => validateName(ok), `'${ok.slice(0, 20)}' is a name`);
  for (const bad of ['.', '..', 'a/b', 'a\\b', 'x\u0000y', 'x\ny', '', 'é'.repeat(128)]) t.throws(() => validateName(bad), { code: 'P2P_BAD_NAME' }, `${JSON.stringify(bad.slice(0, 20))} is refused`);
  t.end();
});

t.test('the refusal quotes the name as it is, non-ASCII included; only control characters are escaped', (t) => {
  t.throws(() => validateName('ünï/x'), { message: /'ünï\/x'/ }, 'ünï shown as ünï');
  t.throws(() => validateName('a\nb'), { message: /'a\\u000ab'/ }, 'a newline shown escaped');
  t.end();
});

t.test('a name from the network becomes a file name in our folder: no separators, no leading dots, inner dots kept', (t) => {
  t.equal(safeFileName('notes...txt', 'fallback'), 'notes...txt');
  t.equal(safeFileName('../../etc/passwd', 'fallback'), '.._.._etc_passwd'.replace(/^\.+/, ''), 'separators replaced, leading dots dropped');
  t.equal(safeFileName('..', 'fallback'), 'fallback');
  t.equal(safeFileName('.', 'fallback'), 'fallback');
  t.equal(safeFileName('.hidden', 'fallback'), 'hidden', 'never a hidden file (partial downloads are)');
  t.equal(safeFileName('a\u0000b', 'fallback'), 'a_b');
  t.end();
});
