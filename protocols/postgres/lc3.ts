import { loadClassifier, classifySql, clearClassifierCache } from './src/classify/index.ts'
import { skeletonOf } from './src/classify/lexer.ts'
await loadClassifier()
const texts = Array.from({length: 20000}, (_, i) => `SELECT abalance FROM pgbench_accounts WHERE aid = ${i * 7};`)
classifySql(texts[0]!)
for (let r = 0; r < 3; r++) {
let t0 = performance.now(); for (const t of texts) skeletonOf(t); console.log('lex us', (performance.now() - t0) / texts.length * 1000)
t0 = performance.now(); for (const t of texts) classifySql(t); console.log('skeleton hit us', (performance.now() - t0) / texts.length * 1000)
t0 = performance.now(); for (let i = 0; i < 20000; i++) classifySql(texts[0]!); console.log('exact hit us', (performance.now() - t0) / 20000 * 1000)
}
