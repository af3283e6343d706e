import { transferMechanism } from '../src/policy/transfer-encoding';

describe('transferMechanism: the first token, as mail apps read it', () => {
  test.each([
    ['base64', 'base64'],
    ['  BASE64  ', 'base64'],
    ['quoted-printable (legacy mailer)', 'quoted-printable'],
    ['quoted-printable(legacy)', 'quoted-printable'],
    ['(by (nested) mailer) base64', 'base64'],
    ['(a \\) b) base64', 'base64'],
    ['"base64"', 'base64'],
    ['base64; charset=x', 'base64'],
    ['7bit base64', '7bit'],
    ['base64\r\n (folded comment)', 'base64'],
    ['', ''],
    ['(only a comment)', ''],
    ['(unterminated base64', ''],
  ])('%j is %j', (value, mechanism) => {
    expect(transferMechanism(value)).toBe(mechanism);
  });

  test('linear: 1 MiB of "(" or of "\\\\" is read at once', () => {
    expect(transferMechanism(`base64 ${'('.repeat(1 << 20)}`)).toBe('base64');
    expect(transferMechanism(`(${'\\'.repeat(1 << 20)}) base64`)).toBe('base64');
  });
});
