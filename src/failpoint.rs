//! Test-only fault injection: a unit test arms a named point on its own thread, and the
//! next time the library passes that point on that thread it fails with an I/O error, as
//! if the disk had. Compiled only into the crate's own unit tests.

use std::cell::RefCell;

use crate::error::Result;

thread_local! {
    static ARMED: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

/// Makes the next pass through `point` on this thread fail.
pub(crate) fn arm(point: &'static str) {
    ARMED.with(|a| a.borrow_mut().push(point));
}

/// Fails once if `point` is armed on this thread.
pub(crate) fn check(point: &'static str) -> Result<()> {
    let hit = ARMED.with(|a| {
        let mut a = a.borrow_mut();
        let at = a.iter().position(|p| *p == point);
        at.map(|at| a.remove(at)).is_some()
    });
    if hit {
        let io = std::io::Error::other(format!("failpoint {point}"));
        return Err(sled::Error::Io(io).into());
    }
    Ok(())
}
