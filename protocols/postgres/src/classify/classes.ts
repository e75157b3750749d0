import { CLASSES, type OperationClass } from '@portcullis/core/types'

const RANK: Record<OperationClass, number> = Object.fromEntries(CLASSES.map((c, i) => [c, i])) as Record<
  OperationClass,
  number
>

/** The stricter of two classes (DESIGN.md order: session < read < … < admin). */
export function stricter(a: OperationClass, b: OperationClass): OperationClass {
  return RANK[b] > RANK[a] ? b : a
}
