//! What the redis store's tests share: a store on a real server, the
//! events it emits, and waiting for a condition that background tasks make
//! true.

use std::cell::RefCell;
use std::path::Path;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use zilla_engine::telemetry::EVENT_TARGET;
use zilla_engine::{Events, SharedCounts, Store};
use zilla_store_redis::{RedisOptions, RedisStore};
pub(crate) use zilla_testkit::eventually;

/// A store named `fleet` (base dir `.`) and its counts.
pub(crate) fn store(options: &RedisOptions) -> (RedisStore, Arc<dyn SharedCounts>) {
    store_in(options, Path::new("."))
}

/// A store whose relative paths are read from `base_dir`.
pub(crate) fn store_in(
    options: &RedisOptions,
    base_dir: &Path,
) -> (RedisStore, Arc<dyn SharedCounts>) {
    let store = RedisStore::new("fleet", options, base_dir, Events::new("test", "fleet"))
        .expect("valid options");
    let counts = store.shared_counts().expect("a redis store shares counts");
    (store, counts)
}

/// Waits until the store says it is available and a heartbeat was
/// answered (a store is taken to answer until something goes unanswered).
pub(crate) async fn available(counts: &Arc<dyn SharedCounts>) {
    eventually("the store to be available", Duration::from_secs(10), || {
        let stats = counts.stats();
        let answered = stats.commands("heartbeat") > stats.errors("heartbeat");
        let up = counts.available() && answered;
        async move { up }
    })
    .await;
}

/// A number redis-cli printed.
pub(crate) fn number(output: Result<String, String>) -> i64 {
    let output = output.expect("redis-cli answers");
    output
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {output:?}"))
}

/// Events as `(name, message)`, appended to by the capturing layer.
type EventLog = Arc<Mutex<Vec<(String, String)>>>;

/// The telemetry events emitted on this thread while a [`Captured`] lives.
pub(crate) struct Captured {
    events: EventLog,
}

thread_local! {
    /// Where the capturing layer puts this thread's events, while captured.
    static CAPTURING: RefCell<Option<EventLog>> =
        const { RefCell::new(None) };
}

/// Starts capturing events (the tests' runtimes are single-threaded, so
/// every task of the test runs on this thread). One global subscriber for
/// every test thread: with a subscriber per thread (`set_default`), a
/// callsite first hit on a thread without one could be cached as
/// uninteresting while tests run in parallel, and an event went missing.
pub(crate) fn capture() -> Captured {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(CaptureLayer);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    let events = Arc::new(Mutex::new(Vec::new()));
    CAPTURING.with(|capturing| *capturing.borrow_mut() = Some(events.clone()));
    Captured { events }
}

impl Drop for Captured {
    fn drop(&mut self) {
        CAPTURING.with(|capturing| capturing.borrow_mut().take());
    }
}

impl Captured {
    /// Every event so far as `(name, message)`.
    pub(crate) fn all(&self) -> Vec<(String, String)> {
        self.events.lock().unwrap().clone()
    }

    /// The events named `name` so far.
    pub(crate) fn named(&self, name: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|(event, _)| event == name)
            .map(|(_, message)| message)
            .collect()
    }
}

struct CaptureLayer;

impl<S: tracing::Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) {
        if event.metadata().target() != EVENT_TARGET {
            return;
        }
        let Some(events) = CAPTURING.with(|capturing| capturing.borrow().clone()) else {
            return;
        };
        let mut fields = EventFields::default();
        event.record(&mut fields);
        events.lock().unwrap().push((fields.name, fields.message));
    }
}

#[derive(Default)]
struct EventFields {
    name: String,
    message: String,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "event" {
            self.name = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "event" => self.name = format!("{value:?}"),
            _ => {}
        }
    }
}
