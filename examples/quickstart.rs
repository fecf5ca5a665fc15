//! A session that survives restarts: run this twice and watch the visit count grow.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! The token that a web server would put in a cookie is kept in `quickstart-data/cookie`
//! here, playing the browser's part.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = Path::new("quickstart-data");
    let store = sessile::Store::open(data.join("sessions"))?;
    let cookie_file = data.join("cookie");

    // The "browser" sends its cookie, if it has one.
    let cookie = std::fs::read_to_string(&cookie_file).ok();
    let known = match cookie.as_deref().map(str::parse::<sessile::SessionId>) {
        Some(Ok(id)) => store.load(&id)?,
        _ => None,
    };
    let session = match known {
        Some(session) => session,
        None => {
            // No cookie, a malformed one, or an expired session: start afresh.
            let session = store.create()?;
            std::fs::write(&cookie_file, session.id().to_string())?;
            session
        }
    };

    // Atomic read-modify-write of the counter.
    let visits = store
        .update(session.id(), |s| -> Result<u64, sessile::Error> {
            let visits = s.get::<u64>("visits")?.unwrap_or(0) + 1;
            s.insert("visits", &visits)?;
            Ok(visits)
        })?
        .ok_or("the session vanished")??;

    let age = session.created_at().elapsed().unwrap_or_default().as_secs();
    println!(
        "visit {visits} of session {} (created {age} s ago); run me again",
        session.handle()
    );
    Ok(())
}
