// Placeholder entry; the real CLI is built in this package (see README, CLI reference).
console.log('portcullis: usage: portcullis <start|check-config|explain|token|verify|replay|approvals>')
