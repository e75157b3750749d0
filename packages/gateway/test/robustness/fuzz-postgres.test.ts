// Structure-aware fuzzing of the postgres codec through the real gateway process (see fuzz-file.ts).
import { fuzzFile } from './fuzz-file.ts'

fuzzFile('postgres')
