//! `update`: the atomic read-modify-write of one session. The closure runs with the
//! session's stripe lock held (and, on Redis, its lease), and what it leaves in the session
//! is committed as one write.

use crate::engine::Engine;
use crate::engine::commit::{Change, Committed, Contents};
use crate::engine::read::Via;
use crate::engine::write::Step;
use crate::error::{Error, Result};
use crate::expiry;
use crate::id::SessionId;
use crate::session::Session;

impl Engine {
    /// Runs `f` on the live session `id` with its record locked, then commits what `f`
    /// left in the session. `None` if the session is not live (then `f` does not run).
    ///
    /// While `f` runs, this thread holds the session's stripe lock and nothing else:
    /// reads inside `f` work (they never wait for a lock), writes fail with
    /// [`Error::WriteInsideUpdate`] instead of waiting. If `f` gave the session to another
    /// user, the commit needs the previous user's lock (see `revoke`): it
    /// is tried without waiting; if a revoke or cap holds it, the stripe is released, the
    /// user lock awaited, and the result committed only if the record is still the one
    /// `f` saw (a session revoked meanwhile stays revoked: [`Error::NotFound`]).
    pub(crate) fn update_with<R>(
        &self,
        id: &SessionId,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Result<Option<R>> {
        let digest = self.digest_of(id);
        // The locks (and the lease, unless the commit's write released it) are released at
        // the end of this block, before the cap.
        let (result, step) = {
            let held = self.locks.stripe(&digest)?;
            // On Redis, other processes' writes wait for this lease, as this process's
            // wait for the stripe lock (taken first, so threads here queue fairly).
            let lease = self.backend.lease(&digest)?;
            let now = self.now();
            let Some(old) = self
                .record(&digest, Via::Locked(&held))?
                .filter(|e| expiry::is_live(&self.config, &e.header, now))
            else {
                return Ok(None);
            };
            let mut session = self.session(id.clone(), digest, &old);
            let result = {
                let _inside = self.locks.enter_update();
                f(&mut session)
            };
            let contents = Contents::new(self, session.user, session.values, session.lifetime)?;
            let change = Change::Replace(&contents);
            let leaving = old.user.as_deref().filter(|_| change.moves_out(&old));
            let step = match leaving.map(|user| (user, self.locks.try_user(user))) {
                None | Some((_, Some(_))) => {
                    self.commit_locked(&digest, &change, Some(&old), &held)?
                }
                Some((user, None)) => {
                    // Hold nothing while waiting: the commit below checks the record is
                    // still the one `f` saw, which is what the lease was for.
                    drop(held);
                    #[allow(clippy::drop_non_drop, reason = "a Redis lease releases on drop")]
                    drop(lease);
                    let _user = self.locks.user(user)?;
                    let held = self.locks.stripe(&digest)?;
                    match self.record(&digest, Via::Locked(&held))? {
                        None => return Err(Error::NotFound),
                        Some(now) if now.bytes != old.bytes => return Err(Error::UpdateConflict),
                        Some(now) => self.commit_locked(&digest, &change, Some(&now), &held)?,
                    }
                }
            };
            (result, step)
        };
        let assigned = match step {
            Step::Done((Committed::Written | Committed::Unchanged, assigned)) => assigned,
            // It expired while `f` ran.
            Step::Done((Committed::Gone, _)) => return Err(Error::NotFound),
            // `f` gave it a lifetime that has ended: deleted, durably, as a logout is.
            Step::Done((Committed::Expired(user), _)) => {
                self.ended_by_lifetime(&digest, user)?;
                return Err(Error::NotFound);
            }
            // The record changed under the stripe lock: only a write this process's locks
            // do not cover can do that (on Redis, another store's revoke-all or cap, which
            // ignore leases). Gone means revoked: it stays so.
            Step::Retry => {
                return Err(match self.live(&digest)? {
                    None => Error::NotFound,
                    Some(_) => Error::UpdateConflict,
                });
            }
        };
        if let Some(user) = assigned {
            self.enforce_user_limit(&user, &digest)?;
        }
        Ok(Some(result))
    }
}
