//! The store's keys and the Lua scripts that change them.
//!
//! Every change is one script, so that what it reads and what it writes are
//! one atomic step on the server (two replicas joining the last place of a
//! set cannot both get it), and time is the server's (`TIME` inside the
//! script: one clock for the whole fleet, whatever the replicas' clocks say;
//! Redis 7 replicates a script's effects, so reading the time is allowed).
//!
//! The two keys of a set share a hash tag (the set's name in braces), so a
//! Redis Cluster keeps them in one slot and a script may touch both.

use std::sync::LazyLock;

use redis::Script;

/// `{prefix}:{<set>}:members`: a sorted set, member -> lease expiry (ms of
/// the server's clock).
pub(crate) fn members_key(prefix: &str, set: &str) -> String {
    format!("{prefix}:{{{set}}}:members")
}

/// `{prefix}:{<set>}:owners`: a hash, member -> token of the membership
/// that holds it (so that only that one may leave it).
pub(crate) fn owners_key(prefix: &str, set: &str) -> String {
    format!("{prefix}:{{{set}}}:owners")
}

/// `{prefix}:{<bucket>}:tat`: a bucket's theoretical arrival time (µs of
/// the server's clock), GCRA's one number.
pub(crate) fn bucket_key(prefix: &str, bucket: &str) -> String {
    format!("{prefix}:{{{bucket}}}:tat")
}

/// `{prefix}:replicas`: a sorted set, replica id -> expiry (ms), kept by
/// every replica's heartbeat.
pub(crate) fn replicas_key(prefix: &str) -> String {
    format!("{prefix}:replicas")
}

/// The server's time in ms, as every script starts.
const NOW_MS: &str = "
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
";

/// KEYS: members, owners. ARGV: member, token, capacity, lease_ms.
/// Drops expired members, then admits `member` when it is there already
/// (re-taken with the new token: the same device through another
/// connection) or the set has room. Returns 1 when admitted, 0 when full.
pub(crate) static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
for _, gone in ipairs(expired) do
  redis.call('ZREM', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
end
local member, token = ARGV[1], ARGV[2]
local capacity, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('ZSCORE', KEYS[1], member) or redis.call('ZCARD', KEYS[1]) < capacity then
  redis.call('ZADD', KEYS[1], now + lease, member)
  redis.call('HSET', KEYS[2], member, token)
  redis.call('PEXPIRE', KEYS[1], lease)
  redis.call('PEXPIRE', KEYS[2], lease)
  return 1
end
return 0"
    ))
});

/// KEYS: members, owners. ARGV: member, token. Removes `member` only when
/// `token` still owns it: a newer membership of the same member (on this
/// replica or another) keeps it. Returns 1 when removed.
pub(crate) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0",
    )
});

/// KEYS: members, owners. ARGV: lease_ms, then member, token pairs.
/// Extends each member this replica still owns, and takes back each one
/// nobody owns (a server restarted empty, or a member held while the store
/// did not answer); a member another membership owns is left to it.
/// Returns how many members were not in the set (re-registered).
pub(crate) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
local lease = tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV, 2 do
  local member, token = ARGV[i], ARGV[i + 1]
  local owner = redis.call('HGET', KEYS[2], member)
  if not owner or owner == token then
    added = added + redis.call('ZADD', KEYS[1], now + lease, member)
    redis.call('HSET', KEYS[2], member, token)
  end
end
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], lease)
return added"
    ))
});

/// KEYS: tat. ARGV: rate (tokens/s), burst, tokens. GCRA granting what
/// is there (a partial grant rather than all or nothing). Returns
/// `{granted, retry_after_us}`: how long until the tokens not granted would
/// be there (0 when all were granted).
pub(crate) static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local rate, burst, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local interval = 1000000 / rate
local window = burst * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allowed = math.floor((now + window - tat) / interval + 1e-9)
if allowed < 0 then allowed = 0 end
if allowed > tokens then allowed = tokens end
tat = tat + allowed * interval
local retry = 0
if allowed < tokens then
  retry = math.ceil(tat + (tokens - allowed) * interval - window - now)
  if retry < 0 then retry = 0 end
end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil(window / 1000) + 1000)
return {allowed, retry}",
    )
});

/// KEYS: replicas. ARGV: replica id, ttl_ms. Notes this replica alive until
/// now + ttl, forgets replicas past their expiry, and returns how many are
/// alive (this one included).
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])"
    ))
});

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag Redis Cluster hashes: what is between the first `{` and
    /// the next `}` when not empty, else the whole key.
    fn hash_tag(key: &str) -> &str {
        key.find('{')
            .and_then(|open| {
                let close = key[open + 1..].find('}')?;
                (close > 0).then(|| &key[open + 1..open + 1 + close])
            })
            .unwrap_or(key)
    }

    #[test]
    fn both_keys_of_a_set_hash_to_one_slot() {
        let members = members_key("zilla", "tenant:acme");
        let owners = owners_key("zilla", "tenant:acme");
        assert_eq!(members, "zilla:{tenant:acme}:members");
        assert_eq!(owners, "zilla:{tenant:acme}:owners");
        assert_eq!(hash_tag(&members), "tenant:acme");
        assert_eq!(hash_tag(&members), hash_tag(&owners));
    }

    #[test]
    fn every_key_starts_with_the_prefix() {
        assert_eq!(
            bucket_key("fleet", "connects:acme"),
            "fleet:{connects:acme}:tat"
        );
        assert_eq!(replicas_key("fleet"), "fleet:replicas");
        assert!(members_key("p", "s").starts_with("p:"));
    }
}
