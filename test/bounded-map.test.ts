import { BoundedMap } from '../src/spool/bounded-map';

describe('BoundedMap', () => {
  test('past its entries it forgets the oldest first', () => {
    const map = new BoundedMap<string, number>(2);
    map.set('a', 1);
    map.set('b', 2);
    map.set('c', 3);
    expect([map.get('a'), map.get('b'), map.get('c'), map.size]).toEqual([undefined, 2, 3, 2]);
  });

  test('past its weight it forgets the oldest until the rest fits; one too heavy alone is not kept', () => {
    const map = new BoundedMap<string, string>(100, { maxWeight: 10, weigh: (value) => value.length });
    map.set('a', 'xxxx');
    map.set('b', 'xxxx');
    map.set('c', 'xxxx');
    expect([map.get('a'), map.get('b'), map.get('c')]).toEqual([undefined, 'xxxx', 'xxxx']);
    map.set('d', 'x'.repeat(11));
    expect(map.size).toBe(0);
  });

  test('delete says whether there was an entry, and gives its weight back', () => {
    const map = new BoundedMap<string, string>(100, { maxWeight: 10, weigh: (value) => value.length });
    map.set('a', 'xxxxxx');
    expect(map.delete('a')).toBe(true);
    expect(map.delete('a')).toBe(false);
    map.set('b', 'xxxxxx');
    expect(map.get('b')).toBe('xxxxxx');
  });

  test('setting a key again replaces its entry and its weight, and makes it the newest', () => {
    const map = new BoundedMap<string, string>(2, { maxWeight: 10, weigh: (value) => value.length });
    map.set('a', 'xxxxxxxx');
    map.set('a', 'xx');
    map.set('b', 'xxxxxxxx');
    expect([map.get('a'), map.get('b')]).toEqual(['xx', 'xxxxxxxx']);
    map.set('a', 'x');
    map.set('c', 'x');
    expect([map.get('a'), map.get('b'), map.get('c')]).toEqual(['x', undefined, 'x']);
  });
});
