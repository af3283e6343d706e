import { OpenCounts } from '../src/limits/open-counts';

describe('OpenCounts', () => {
  test('counts up and down per key; a key back at zero is forgotten, and never goes below zero', () => {
    const open = new OpenCounts();
    open.add('192.0.2.1');
    open.add('192.0.2.1');
    open.add('2001:db8::/64');
    expect(open.get('192.0.2.1')).toBe(2);
    expect(open.get('2001:db8::/64')).toBe(1);
    expect(open.get('192.0.2.9')).toBe(0);
    open.remove('192.0.2.1');
    open.remove('192.0.2.1');
    open.remove('192.0.2.1');
    expect(open.get('192.0.2.1')).toBe(0);
    open.add('192.0.2.1');
    expect(open.get('192.0.2.1')).toBe(1);
  });
});
