// The Redis store's atomic steps, as Lua run by one EVALSHA each: a decision checks and writes in one
// step, so two approvers at once yield one decision. Keys are built inside the scripts from the
// prefix (ARGV[1]), so the store needs one Redis (a primary, with replicas if you like), not Cluster.
// Time is the server's (TIME), as Postgres' now() is for the Postgres store.

const NOW = `local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`
const XADD = (kind: string, fields: string) => `redis.call('XADD', p .. 'changes', 'MAXLEN', '~', 100000, '*', 'kind', '${kind}', ${fields})`

/** a request change carries the request's whole hash (body, status, votes, release) */
const XADD_REQUEST = (key: string) => `redis.call('XADD', p .. 'changes', 'MAXLEN', '~', 100000, '*', 'kind', 'request', unpack(redis.call('HGETALL', ${key})))`

/** ARGV: prefix, id, body, instance, expires, retainMs, minApprovals, mode */
/**
 * A decision's window: the grant (body, fingerprint and expiry ms in the ARGV slots named), kept
 * until it lapses, and its change. Written only when the body slot is set.
 */
const WRITE_GRANT = (body: number, fingerprint: number, until: number) => `if ARGV[${body}] ~= '' then
  local ttl = tonumber(ARGV[${until}]) - now
  if ttl > 0 then
    redis.call('SET', p .. 'grant:' .. ARGV[${fingerprint}], ARGV[${body}], 'PX', ttl)
    redis.call('ZADD', p .. 'grants', ARGV[${until}], ARGV[${fingerprint}])
  end
  ${XADD('grant', `'body', ARGV[${body}]`)}
end`

export const PUT_REQUEST = `
local p = ARGV[1]
${NOW}
local key = p .. 'req:' .. ARGV[2]
redis.call('HSET', key, 'body', ARGV[3], 'status', 'pending', 'instance', ARGV[4], 'expires', ARGV[5], 'min', ARGV[7], 'nvotes', 0, 'mode', ARGV[8])
redis.call('PEXPIRE', key, math.max(1, tonumber(ARGV[5]) - now) + tonumber(ARGV[6]))
redis.call('ZADD', p .. 'reqs', now, ARGV[2])
if ARGV[4] ~= '' then redis.call('SADD', p .. 'pending:' .. ARGV[4], ARGV[2]) end
${XADD_REQUEST('key')}
return 1`

/**
 * ARGV: prefix, id, status, decidedBy, reason, decision ('1' approve/deny: needs unexpired and a
 * live holder), grant JSON or '', grant key, grant until, retainMs.
 * Returns {'ok'} or {'missing'} / {'status', s} / {'expired'} / {'orphan'}.
 */
export const DECIDE = `
local p = ARGV[1]
local key = p .. 'req:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return {'missing'} end
local st = redis.call('HGET', key, 'status')
if st ~= 'pending' then return {'status', st} end
${NOW}
local inst = redis.call('HGET', key, 'instance')
if ARGV[6] == '1' then
  if tonumber(redis.call('HGET', key, 'expires')) <= now then return {'expired'} end
  if inst and inst ~= '' and redis.call('EXISTS', p .. 'lease:' .. inst) == 0 then return {'orphan'} end
end
redis.call('HSET', key, 'status', ARGV[3], 'decidedBy', ARGV[4], 'reason', ARGV[5])
redis.call('PEXPIRE', key, tonumber(ARGV[10]))
redis.call('ZADD', p .. 'reqs', now, ARGV[2])
if inst and inst ~= '' then redis.call('SREM', p .. 'pending:' .. inst, ARGV[2]) end
${WRITE_GRANT(7, 8, 9)}
${XADD_REQUEST('key')}
return {'ok'}`

/**
 * ARGV: prefix, reason, instance or ''. With an instance: gives its lease back now (shutdown);
 * without: every instance whose lease key has expired. Either way its pending requests read
 * withdrawn and its sessions go. Returns the instances reaped.
 */
export const REAP = `
local p = ARGV[1]
local ids
if ARGV[3] ~= '' then
  redis.call('DEL', p .. 'lease:' .. ARGV[3])
  ids = {ARGV[3]}
else
  ids = redis.call('SMEMBERS', p .. 'instances')
end
local dead = {}
for _, i in ipairs(ids) do
  if redis.call('EXISTS', p .. 'lease:' .. i) == 0 then
    redis.call('SREM', p .. 'instances', i)
    table.insert(dead, i)
    for _, rid in ipairs(redis.call('SMEMBERS', p .. 'pending:' .. i)) do
      local key = p .. 'req:' .. rid
      if redis.call('HGET', key, 'status') == 'pending' then
        redis.call('HSET', key, 'status', 'withdrawn', 'reason', ARGV[2])
        ${XADD_REQUEST('key')}
      end
    end
    redis.call('DEL', p .. 'pending:' .. i, p .. 'sessions:' .. i)
  end
end
return dead`

/**
 * One approver's yes (minApprovals). ARGV: prefix, id, voter, vote JSON, grant JSON or '', grant
 * key, grant until, retainMs. Each voter is a hash field `vote:<subject>`: the same approver twice
 * counts once; the request turns approved in the step that brings the count to `min`.
 * Returns {'ok', status} or {'missing'} / {'status', s} / {'expired'} / {'orphan'} / {'counted'}.
 */
export const VOTE = `
local p = ARGV[1]
local key = p .. 'req:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return {'missing'} end
local st = redis.call('HGET', key, 'status')
if st ~= 'pending' then return {'status', st} end
${NOW}
local inst = redis.call('HGET', key, 'instance')
if tonumber(redis.call('HGET', key, 'expires')) <= now then return {'expired'} end
if inst and inst ~= '' and redis.call('EXISTS', p .. 'lease:' .. inst) == 0 then return {'orphan'} end
if redis.call('HEXISTS', key, 'vote:' .. ARGV[3]) == 1 then return {'counted'} end
redis.call('HSET', key, 'vote:' .. ARGV[3], ARGV[4])
local n = redis.call('HINCRBY', key, 'nvotes', 1)
if n < tonumber(redis.call('HGET', key, 'min') or '1') then
  ${XADD_REQUEST('key')}
  return {'ok', 'pending'}
end
redis.call('HSET', key, 'status', 'approved', 'decidedBy', ARGV[3])
redis.call('PEXPIRE', key, math.max(tonumber(redis.call('HGET', key, 'expires')) - now, 0) + tonumber(ARGV[8]))
redis.call('ZADD', p .. 'reqs', now, ARGV[2])
if inst and inst ~= '' then redis.call('SREM', p .. 'pending:' .. inst, ARGV[2]) end
${WRITE_GRANT(5, 6, 7)}
${XADD_REQUEST('key')}
return {'ok', 'approved'}`

/**
 * Defer mode: lets an approved request's statement through once. ARGV: prefix, id.
 * Returns 1 when this call released it, 0 otherwise.
 */
export const RELEASE = `
local p = ARGV[1]
local key = p .. 'req:' .. ARGV[2]
if redis.call('HGET', key, 'status') ~= 'approved' then return 0 end
if redis.call('HEXISTS', key, 'released') == 1 then return 0 end
if redis.call('HGET', key, 'mode') ~= 'defer' then return 0 end
${NOW}
if tonumber(redis.call('HGET', key, 'expires')) <= now then return 0 end
redis.call('HSET', key, 'released', now)
${XADD_REQUEST('key')}
return 1`
