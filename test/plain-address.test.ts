import { isPlainAddress } from '../src/message/plain-address';

describe('plain envelope addresses (what the policy judges is what goes out)', () => {
  test.each([
    'user@example.com',
    'First.Last@Example.COM',
    "o'neil+tag=x@corp.example",
    'a!b#c$d%e&f*g/h?i^j_k`l{m|n}o~p-q@x.example',
    'jürgen@corp.example',
    'user@bücher.example',
    'user@[192.0.2.1]',
    'user@sub.domain.example.',
  ])('%s is plain', (address) => {
    expect(isPlainAddress(address)).toBe(true);
  });

  test.each([
    '"ceo"@partner.example',
    '"john doe"@example.com',
    'ceo(comment)@partner.example',
    'ceo(@partner.example',
    'a,b@partner.example',
    'a..b@example.com',
    '.a@example.com',
    'a.@example.com',
    'a b@example.com',
    'a\\b@example.com',
    '@example.com',
    'user@',
    'user',
    'user@exa(mple.com',
    'user@example.com,other@example.com',
    'user@[1.2.3.4',
    'a<b@example.com',
  ])('%s is refused', (address) => {
    expect(isPlainAddress(address)).toBe(false);
  });
});
