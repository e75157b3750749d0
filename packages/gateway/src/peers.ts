// How a codec that fronts other targets (the MCP server) reaches them: as one more client of each
// target's own listener. The connection is served by that target's codec like any from the network,
// so its identity, policy, approvals, masking, recording and audit are the wire path's own, not a copy.
import { connect as netConnect } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import type { Duplex } from 'node:stream'
import type { Config, Core, Peer, Peers } from '@portcullis/core'
import type { HostPort } from './listen.ts'

/** how long opening a loopback connection to a listener may take */
const CONNECT_TIMEOUT_MS = 5_000

export function gatewayPeers(core: Core, config: () => Config, address: (name: string) => HostPort | undefined): Peers {
  const peers: Peers = {
    get(name) {
      const t = config().targets.find((x) => x.name === name)
      if (!t || t.protocol === 'mcp') return undefined
      const peer: Peer = {
        name: t.name,
        protocol: t.protocol,
        options: t.options,
        async connect(): Promise<Duplex> {
          const at = address(name)
          if (!at) throw new Error(`target ${name} is not listening`)
          // a wildcard listen address is reached on loopback
          const host = at.host === '0.0.0.0' || at.host === '' ? '127.0.0.1' : at.host === '::' ? '::1' : at.host
          // Postgres negotiates TLS inside its protocol (its codec owns it); the others' listeners
          // speak TLS from the first byte. The certificate pinned is the listener's own.
          const tls = t.tls !== undefined && t.protocol !== 'postgres'
          const socket = tls
            ? tlsConnect({ host, port: at.port, ca: readFileSync(t.tls!.cert), checkServerIdentity: () => undefined })
            : netConnect({ host, port: at.port })
          socket.setNoDelay(true)
          const timer = setTimeout(() => socket.destroy(new Error(`connecting to target ${name} timed out`)), CONNECT_TIMEOUT_MS)
          try {
            await once(socket, tls ? 'secureConnect' : 'connect')
          } finally {
            clearTimeout(timer)
          }
          return socket
        },
      }
      return peer
    },
    wouldDecide: (principal, target, op) => core.wouldDecide(principal, target, op).action,
    approval: (id) => core.approvals.fetch(id),
    issuers: () => config().identity.issuers.map((i) => i.issuer),
    openSession(target, remote) {
      const s = core.openSession(target, remote)
      s.peers = peers
      return s
    },
  }
  return peers
}
