//! The Lua scripts of the Redis backend: every change to the store is one of them, so
//! each is atomic on the server (see the parent module).

use redis::Script;

/// The scripts, loaded once per store (sent by hash; the client loads a script the
/// server does not know).
pub(super) struct Scripts {
    /// See [`WRITE`].
    pub(super) write: Script,
    /// See [`REPLACE`].
    pub(super) replace: Script,
    pub(super) delete: Script,
    pub(super) move_record: Script,
    pub(super) quarantine: Script,
    pub(super) drop_if_absent: Script,
    pub(super) revoke: Script,
    pub(super) cap: Script,
    pub(super) release: Script,
    pub(super) repair: Script,
    pub(super) raise: Script,
    pub(super) link: Script,
}

/// Removes the handle index entry (hash `KEYS[key]`) of the member `m` (a Lua
/// expression), if it names that member: a handle is the first 32 hex digits.
macro_rules! unindex {
    ($key:literal, $m:literal) => {
        concat!(
            "if redis.call('HGET', KEYS[",
            $key,
            "], string.sub(",
            $m,
            ", 1, 32)) == ",
            $m,
            " then redis.call('HDEL', KEYS[",
            $key,
            "], string.sub(",
            $m,
            ", 1, 32)) end "
        )
    };
}

/// The lease check every single-session script starts with: -1 if another store's
/// `update` holds the session. `KEYS[lease]` and `ARGV[nonce]` are spliced in.
macro_rules! lease_check {
    ($key:literal, $nonce:literal) => {
        concat!(
            "local lease = redis.call('GET', KEYS[",
            $key,
            "]) if lease and lease ~= ARGV[",
            $nonce,
            "] then return -1 end "
        )
    };
}

/// The write script (see [`Scripts::write`]), whose source the backend loads itself on
/// the namespace's node before a pipeline of writes. Every write puts the record's
/// expiry, user and handle entries back as they should be, so an entry that went
/// missing (an evicted set, a hand edit) comes back with the session's next such write.
///
/// KEYS: record, expiry, lease, old user set, new user set, handles.
/// ARGV: mode (absent|match), old bytes, new bytes, ttl, expires_at, created_at, member,
/// nonce, old has user, new has user. With a nonce (an `update`'s commit), a write that
/// lands also releases the lease: the update's fourth round trip saved.
pub(super) const WRITE: &str = concat!(
    lease_check!("3", "8"),
    "local cur = redis.call('GET', KEYS[1]) ",
    "if ARGV[1] == 'absent' then if cur then return 0 end ",
    "elseif cur ~= ARGV[2] then return 0 end ",
    "redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) ",
    "redis.call('ZADD', KEYS[2], ARGV[5], ARGV[7]) ",
    "if ARGV[9] == '1' and (ARGV[10] ~= '1' or KEYS[4] ~= KEYS[5]) then ",
    "redis.call('ZREM', KEYS[4], ARGV[7]) end ",
    "if ARGV[10] == '1' then redis.call('ZADD', KEYS[5], ARGV[6], ARGV[7]) end ",
    "redis.call('HSET', KEYS[6], string.sub(ARGV[7], 1, 32), ARGV[7]) ",
    "if ARGV[8] ~= '' then redis.call('DEL', KEYS[3]) end ",
    "return 1"
);

/// The replace script (see [`Scripts::replace`]): a save that changes neither the user,
/// the stored expiry nor the creation time, so every index entry stays as it is (a
/// missing one is put back by the session's next `write`, or by `verify --repair`).
///
/// KEYS: record, lease. ARGV: old bytes, new bytes, ttl, nonce (with one, a write that
/// lands releases the lease, as `write` does).
pub(super) const REPLACE: &str = concat!(
    lease_check!("2", "4"),
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end ",
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) ",
    "if ARGV[4] ~= '' then redis.call('DEL', KEYS[2]) end ",
    "return 1"
);

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            replace: Script::new(REPLACE),
            write: Script::new(WRITE),
            // KEYS: record, expiry, user set, handles. ARGV: old bytes, member, has user.
            // No lease check: like revoke-all, a logout must not wait for (or be held
            // off by) another store's updates; an update whose record it deletes fails
            // its commit with NotFound.
            delete: Script::new(concat!(
                "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end ",
                "redis.call('DEL', KEYS[1]) redis.call('ZREM', KEYS[2], ARGV[2]) ",
                "if ARGV[3] == '1' then redis.call('ZREM', KEYS[3], ARGV[2]) end ",
                unindex!("4", "ARGV[2]"),
                "return 1"
            )),
            // KEYS: old record, new record, expiry, old lease, old user set, new user set,
            //       handles.
            // ARGV: old bytes, new bytes, ttl, expires_at, created_at, old member,
            //       new member, nonce, old has user, new has user.
            // 0: the old record changed; 2: the new digest is taken.
            move_record: Script::new(concat!(
                lease_check!("4", "8"),
                "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end ",
                "if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end ",
                "redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) redis.call('DEL', KEYS[1]) ",
                "redis.call('ZREM', KEYS[3], ARGV[6]) redis.call('ZADD', KEYS[3], ARGV[4], ARGV[7]) ",
                "if ARGV[9] == '1' then redis.call('ZREM', KEYS[5], ARGV[6]) end ",
                "if ARGV[10] == '1' then redis.call('ZADD', KEYS[6], ARGV[5], ARGV[7]) end ",
                unindex!("7", "ARGV[6]"),
                "redis.call('HSET', KEYS[7], string.sub(ARGV[7], 1, 32), ARGV[7]) ",
                "return 1"
            )),
            // KEYS: quarantine hash, record. ARGV: member, bytes.
            quarantine: Script::new(concat!(
                "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) ",
                "if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) return 1 end ",
                "return 0"
            )),
            // KEYS: record, sorted set, and optionally handles. ARGV: member. Drops an
            // index entry (and its handle entry) whose record is gone (its TTL ran out, or
            // it was quarantined).
            drop_if_absent: Script::new(concat!(
                "if redis.call('EXISTS', KEYS[1]) == 0 then ",
                "if #KEYS > 2 then ",
                unindex!("3", "ARGV[1]"),
                "end ",
                "return redis.call('ZREM', KEYS[2], ARGV[1]) end return 0"
            )),
            // KEYS: user set, expiry, ended, handles. ARGV: record key prefix, kept handle (hex) or
            // "", now, margin. Each session it deletes is marked ended (its handle, until
            // its expiry and the margin, never lowered) before it goes. Deletes the user's live sessions and returns them; expired ones are
            // left to the purge (as on sled), members whose record is gone are dropped. Leases do not hold
            // it up: an update whose session it deletes fails its commit (NotFound), and
            // no stream of updates can keep a revoke from landing.
            revoke: Script::new(concat!(
                "local now = tonumber(ARGV[3]) local out = {} ",
                "for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do ",
                "if ARGV[2] == '' or string.sub(m, 1, #ARGV[2]) ~= ARGV[2] then ",
                "local exp = redis.call('ZSCORE', KEYS[2], m) ",
                "if exp and tonumber(exp) > now then ",
                "redis.call('ZADD', KEYS[3], 'GT', tonumber(exp) + tonumber(ARGV[4]), string.sub(m, 1, 32)) ",
                "if redis.call('DEL', ARGV[1] .. m) == 1 then out[#out + 1] = m end ",
                "redis.call('ZREM', KEYS[2], m) redis.call('ZREM', KEYS[1], m) ",
                unindex!("4", "m"),
                "elseif redis.call('EXISTS', ARGV[1] .. m) == 0 then ",
                "redis.call('ZREM', KEYS[1], m) end end end ",
                "return out"
            )),
            // KEYS: user set, expiry, ended, handles. ARGV: record key prefix, max, kept member,
            // now, margin. Evicts the oldest live sessions (by created_at, then digest) beyond
            // max, never the kept one, each marked ended first as in revoke; leases do not
            // hold it up, as for revoke. Returns the members evicted.
            cap: Script::new(concat!(
                "local now = tonumber(ARGV[4]) local live = {} local keep = false ",
                "for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do ",
                "local exp = redis.call('ZSCORE', KEYS[2], m) ",
                "if exp and tonumber(exp) > now and redis.call('EXISTS', ARGV[1] .. m) == 1 then ",
                "if m == ARGV[3] then keep = true else live[#live + 1] = m end end end ",
                "local room = tonumber(ARGV[2]) if keep then room = room - 1 end ",
                "local out = {} ",
                "for i = 1, #live - room do local m = live[i] ",
                "local exp = redis.call('ZSCORE', KEYS[2], m) ",
                "if exp then redis.call('ZADD', KEYS[3], 'GT', tonumber(exp) + tonumber(ARGV[5]), string.sub(m, 1, 32)) end ",
                "redis.call('DEL', ARGV[1] .. m) redis.call('ZREM', KEYS[2], m) ",
                "redis.call('ZREM', KEYS[1], m) ",
                unindex!("4", "m"),
                "out[#out + 1] = m end ",
                "return out"
            )),
            // KEYS: lease. ARGV: nonce.
            release: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            ),
            // KEYS: revocations hash. ARGV: user, time, kept handle (hex) or "". Sets the
            // user's mark to `<time>` or `<time>:<kept>`, the time never moving back (a
            // later one stored stays, with this kept session).
            raise: Script::new(concat!(
                "local at = tonumber(ARGV[2]) ",
                "local cur = redis.call('HGET', KEYS[1], ARGV[1]) ",
                "if cur then local stored = tonumber(string.match(cur, '^%d+')) ",
                "if stored and stored > at then at = stored end end ",
                "local mark = string.format('%d', at) ",
                "if ARGV[3] ~= '' then mark = mark .. ':' .. ARGV[3] end ",
                "redis.call('HSET', KEYS[1], ARGV[1], mark) return 1"
            )),
            // KEYS: the link's set. ARGV: successor handle (hex), time to live (ms). Adds
            // the successor; the link lives at least that long.
            link: Script::new(concat!(
                "redis.call('SADD', KEYS[1], ARGV[1]) ",
                "if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then ",
                "redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 1"
            )),
            // KEYS: record, sorted set. ARGV: bytes, score, member. Adds a missing index
            // entry if the record is still the one verify read.
            repair: Script::new(concat!(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then ",
                "return redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) end return 0"
            )),
        }
    }
}
