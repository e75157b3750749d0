// The streamed text fields of an event (deltaSlots: OpenAI chat and completions choices, Responses
// API `*.delta`, Anthropic `content_block_delta`), each as a Found: where its text sits and how to
// build a delta event of the same kind that carries held text (sse.ts flushes held text with it).
import type { Shape } from './sse-shape.ts'

/** one streamed text field of an event: where it sits, and how to send held text shaped like it */
export interface Found {
  /** the slot: which stream of text this continues */
  readonly key: string
  /** where the text sits in the event's JSON (a json-mask path) */
  readonly path: string
  /** where it sits in the event that event() builds */
  readonly builtPath: string
  readonly original: string
  /** lines before the data line of a built event ('event: …\n') */
  readonly prefix: string
  /** a JSON event like this one to carry held text (the text itself is put in at `path`) */
  event(): string
}

export const NONE: readonly Found[] = []

/** chat completions `choices[i].delta.content`, completions `choices[i].text` */
class ChoiceDelta implements Found {
  readonly prefix = ''
  constructor(
    readonly key: string,
    readonly path: string,
    readonly original: string,
    private readonly o: Record<string, any>,
    private readonly c: Record<string, any>,
    private readonly field: 'text' | 'content',
  ) {}

  get builtPath(): string {
    // a built event has the one choice, at index 0
    return this.field === 'text' ? 'choices.0.text' : 'choices.0.delta.content'
  }

  event(): string {
    const c = this.c
    const choice = this.field === 'text' ? { ...c, text: '', finish_reason: null } : { ...c, delta: { content: '' }, finish_reason: null }
    return JSON.stringify({ ...this.o, choices: [choice] })
  }
}

/** Responses API `*.delta` events */
class TypedDelta implements Found {
  readonly path = 'delta'
  readonly builtPath = 'delta'
  constructor(
    readonly key: string,
    readonly original: string,
    private readonly o: Record<string, any>,
  ) {}

  get prefix(): string {
    return typedPrefix(this.o.type as string)
  }

  event(): string {
    return JSON.stringify({ ...this.o, delta: '' })
  }
}

// the strings of the first few choices, made once rather than per event
const SLOT_KEYS = Array.from({ length: 8 }, (_, i) => `choice:${i}`)
const CONTENT_PATHS = Array.from({ length: 8 }, (_, i) => `choices.${i}.delta.content`)
const TEXT_PATHS = Array.from({ length: 8 }, (_, i) => `choices.${i}.text`)
const slotKey = (index: number): string => (index >= 0 && index < 8 && Number.isInteger(index) ? SLOT_KEYS[index] : `choice:${index}`)
const choicePath = (i: number, field: 'text' | 'content'): string =>
  i < 8 ? (field === 'text' ? TEXT_PATHS : CONTENT_PATHS)[i] : `choices.${i}.${field === 'text' ? 'text' : 'delta.content'}`

// a line break in the upstream's type would start lines of its own on the client's side
const typedPrefix = (type: string): string => `event: ${type.replace(/[\r\n]+/g, ' ')}\n`

/** Anthropic Messages `content_block_delta` events: `delta.text`, `delta.partial_json`, `delta.thinking` */
class BlockDelta implements Found {
  readonly path: string
  constructor(
    readonly key: string,
    readonly original: string,
    private readonly o: Record<string, any>,
    private readonly field: 'text' | 'partial_json' | 'thinking',
  ) {
    this.path = `delta.${field}`
  }

  get builtPath(): string {
    return this.path
  }

  get prefix(): string {
    // Anthropic's clients read the event's name: a built event carries it like the upstream's did
    return typedPrefix(this.o.type as string)
  }

  event(): string {
    return JSON.stringify({ ...this.o, delta: { ...this.o.delta, [this.field]: '' } })
  }
}

/** the delta of an event that fits a shape: parsed only when held text must be sent shaped like it */
export class ShapedDelta implements Found {
  constructor(
    private readonly shape: Shape,
    readonly original: string,
    private readonly json: string,
  ) {}

  get key(): string {
    return this.shape.key
  }

  get path(): string {
    return this.shape.path
  }

  get builtPath(): string {
    return this.shape.builtPath
  }

  get prefix(): string {
    return this.shape.prefix
  }

  event(): string {
    const f = deltaSlots(JSON.parse(this.json)).find(f => f.key === this.key && f.path === this.path)
    // fits() vouched that the event parses to the shape's with another string: this cannot be
    if (f === undefined) throw new Error('a server-sent event that fit its shape has another delta')
    return f.event()
  }
}

/** the streamed text fields of one event */
export function deltaSlots(obj: unknown): readonly Found[] {
  if (!obj || typeof obj !== 'object') return NONE
  const o = obj as Record<string, any>
  if (Array.isArray(o.choices)) {
    const out: Found[] = []
    const choices = o.choices as any[]
    for (let i = 0; i < choices.length; i++) {
      const c = choices[i]
      if (!c || typeof c !== 'object') continue
      const index = typeof c.index === 'number' ? c.index : i
      const holder = c.delta && typeof c.delta === 'object' && typeof c.delta.content === 'string' ? c.delta : typeof c.text === 'string' ? c : undefined
      if (!holder) continue
      const field = holder === c ? 'text' : 'content'
      out.push(new ChoiceDelta(slotKey(index), choicePath(i, field), holder[field] as string, o, c, field))
    }
    return out
  }
  if (o.type === 'content_block_delta' && o.delta && typeof o.delta === 'object') {
    // Anthropic Messages: a content block's text, a tool call's JSON, a thinking block, streamed
    const d = o.delta as Record<string, unknown>
    const field = typeof d.text === 'string' ? 'text' : typeof d.partial_json === 'string' ? 'partial_json' : typeof d.thinking === 'string' ? 'thinking' : undefined
    if (field !== undefined) return [new BlockDelta(`block:${o.index ?? ''}:${field}`, d[field] as string, o, field)]
    return NONE
  }
  if (typeof o.type === 'string' && o.type.endsWith('.delta') && typeof o.delta === 'string') {
    return [new TypedDelta(`${o.type}:${o.item_id ?? ''}:${o.output_index ?? ''}:${o.content_index ?? ''}`, o.delta, o)]
  }
  return NONE
}
