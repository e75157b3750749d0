// A MaskPlan built in the test from the types.ts interface only, so the codec's masking can be
// exercised before (and independently of) the core's compiled plans. Two detectors: email and
// OpenAI-style API keys, both with bounded lengths; field rules from a small map.
import type { MaskMethod, MaskPlan } from '@portcullis/core'

const DETECTORS = [/[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,4}\.[A-Za-z]{2,24}/g, /sk-(?:proj-)?[A-Za-z0-9_-]{12,160}/g]

export function stubMasks(opts: { fields?: Record<string, MaskMethod>; detectors?: boolean } = {}): MaskPlan {
  const fields = opts.fields ?? {}
  const detectors = opts.detectors ?? true
  const apply = (method: MaskMethod, value: string): string | null => {
    switch (method) {
      case 'null':
        return null
      case 'partial':
        return value.slice(0, 2) + '***'
      case 'hash':
        return 'hash:' + value.length
      default:
        return '[REDACTED]'
    }
  }
  return {
    empty: !detectors && Object.keys(fields).length === 0,
    forColumn: () => undefined,
    forField: path => fields[path],
    forKey: () => undefined,
    hasDetectors: detectors,
    detectorMethod: 'redact',
    apply,
    scan(text) {
      let count = 0
      if (!detectors) return { text, count }
      for (const re of DETECTORS)
        text = text.replace(re, () => {
          count++
          return '[REDACTED]'
        })
      return { text, count }
    },
    maxMatchLength: 64 + 1 + 63 + 5 * 64 + 25,
    scanStream(text, from, final) {
      // the plain bound: the longest match back from the end, moved back while the cut splits a match
      // (both sides masked apart differ from the whole); the stub's patterns have no lookbehind, so
      // the context before `from` is not needed
      const rest = text.slice(from)
      let cut = final ? text.length : Math.max(from, text.length - this.maxMatchLength)
      const whole = this.scan(rest).text
      while (cut > from && this.scan(text.slice(from, cut)).text + this.scan(text.slice(cut)).text !== whole) cut--
      const r = this.scan(text.slice(from, cut))
      return { ...r, cut }
    },
  }
}

export const emptyMasks = (): MaskPlan => stubMasks({ detectors: false })
