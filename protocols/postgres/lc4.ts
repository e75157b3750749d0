import { loadClassifier } from './src/classify/index.ts'
import { statementText } from './src/classify/text.ts'
await loadClassifier()
for (const s of ["select x + -/* c */1", "select x + -/* cccc */12345", "select x + - -- c\n1", "select -/*c*/1.5, '/* x */' -- é\n", "select 'a' /* é */ from t"]) console.log(JSON.stringify(s), JSON.stringify(statementText(s)))
