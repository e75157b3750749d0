// Checksums that turn "looks like" into "is": a digit run is a card only when Luhn holds, an
// IBAN only when ISO 7064 mod-97 gives 1. Both skip separators so matches need no normalising copy.

/** Luhn over the digits of `s` (spaces and dashes ignored); needs 13–19 digits. */
export function luhnValid(s: string): boolean {
  let sum = 0
  let n = 0
  for (let i = s.length - 1; i >= 0; i--) {
    const c = s.charCodeAt(i) - 48
    if (c < 0 || c > 9) continue
    let d = c
    if (n % 2 === 1) {
      d *= 2
      if (d > 9) d -= 9
    }
    sum += d
    n++
  }
  return n >= 13 && n <= 19 && sum % 10 === 0
}

/** ISO 13616 IBAN check: move the first four characters to the end, letters → 10..35, mod 97 = 1. */
export function ibanValid(s: string): boolean {
  let len = 0
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) !== 32) len++
  if (len < 15 || len > 34) return false
  let rem = 0
  // two passes over the same characters instead of building the rearranged string
  for (let pass = 0; pass < 2; pass++) {
    let seen = 0
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i)
      if (c === 32) continue
      const inHead = seen < 4
      seen++
      if (pass === 0 ? inHead : !inHead) continue
      if (c >= 48 && c <= 57) rem = (rem * 10 + (c - 48)) % 97
      else if (c >= 65 && c <= 90) rem = (rem * 100 + (c - 55)) % 97
      else return false
    }
  }
  return rem === 1
}
