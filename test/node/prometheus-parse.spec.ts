import { describe, expect, it } from 'vitest'
import { parsePrometheus, sumOf } from '../fixtures/prometheus.js'

describe('the test fixture that parses /metrics', () => {
  it('reads what Prometheus reads (NaN and infinities in any case, as prom-client writes them) and refuses the rest', () => {
    const s = parsePrometheus([
      '# HELP x y', 'a Nan', 'b NaN', 'c +Inf', 'd -Inf', 'e{k="v",l="a\\"b"} 2.5', 'e{k="w"} 1 1700000000000', ''
    ].join('\n'))
    expect(s.map(x => x.name)).toEqual(['a', 'b', 'c', 'd', 'e', 'e'])
    expect(Number.isNaN(s[0]!.value) && Number.isNaN(s[1]!.value)).toBe(true)
    expect([s[2]!.value, s[3]!.value]).toEqual([Infinity, -Infinity])
    expect(s[4]!.labels).toEqual({ k: 'v', l: 'a"b' })
    expect(sumOf(s, 'e')).toBe(3.5)
    expect(sumOf(s, 'e', { k: 'w' })).toBe(1)
    expect(() => parsePrometheus('f abc')).toThrow(/bad sample value/)
    expect(() => parsePrometheus('not a line at all')).toThrow(/not a Prometheus sample line/)
  })
})
