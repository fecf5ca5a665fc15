//! Lifecycle events for audit logs.

mod support;

use sessile::{DestroyReason, Event};
use support::{Fixture, IDLE};

#[test]
fn a_scripted_sequence_arrives_in_order() {
    let f = Fixture::new();
    let store = f.open();
    let events = store.subscribe();
    let mut s = store.create().expect("create");
    let first = s.handle();
    s.set_user(Some("alice"));
    store.save(&s).expect("save");
    store.regenerate(&mut s).expect("regenerate");
    let second = s.handle();
    store.destroy(s.id()).expect("destroy");
    let t = store.create().expect("create");
    f.clock.advance(IDLE);
    store.purge_expired().expect("purge");
    let got: Vec<Event> = events.try_iter().collect();
    assert_eq!(
        got,
        [
            Event::Created { handle: first },
            Event::Regenerated {
                old: first,
                new: second,
                user: Some("alice".into())
            },
            Event::Destroyed {
                handle: second,
                user: Some("alice".into()),
                reason: DestroyReason::Destroy
            },
            Event::Created { handle: t.handle() },
            Event::Expired {
                handle: t.handle(),
                user: None
            },
        ]
    );
}

#[test]
fn a_full_channel_never_blocks_and_drops_are_counted() {
    let f = Fixture::new();
    let store = f.config().event_capacity(1).open().expect("open");
    let _events = store.subscribe(); // never read
    for _ in 0..100 {
        store.create().expect("create never blocks");
    }
    assert_eq!(store.stats().events_dropped, 99);
}

#[test]
fn dropping_the_receiver_unsubscribes() {
    let f = Fixture::new();
    let store = f.config().event_capacity(1).open().expect("open");
    drop(store.subscribe());
    for _ in 0..10 {
        store.create().expect("create");
    }
    assert_eq!(store.stats().events_dropped, 0);
}

#[test]
fn events_never_contain_the_token() {
    let f = Fixture::new();
    let store = f.open();
    let events = store.subscribe();
    let s = store.create().expect("create");
    store.destroy(s.id()).expect("destroy");
    let got: Vec<Event> = events.try_iter().collect();
    assert_eq!(got.len(), 2, "Created and Destroyed: {got:?}");
    for e in got {
        assert!(!format!("{e:?}").contains(&s.id().to_string()));
    }
}
