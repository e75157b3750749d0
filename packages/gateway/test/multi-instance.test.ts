// Three gateway instances sharing one Postgres control store behind HAProxy: cases (1)–(5) of issue 12.
import { multiInstance } from './multi-instance.ts'

multiInstance('postgres')
