//! The request a piece of work belongs to (R11.1), across actor hops and nodes: the server runs each
//! request in [`scope`], which sets the id for [`current`] and opens a `request` span carrying it, so every
//! log event of the request's task names it; a message to an actor (or a forward to another node) carries
//! the id, and the actor handles it in [`scope`] again, so its log events name the same request.

use std::future::Future;

use tracing::Instrument as _;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request the current task works for, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `work` for request `id` (nothing is set without one).
pub async fn scope<F: Future>(id: Option<String>, work: F) -> F::Output {
    match id {
        Some(id) => {
            // At error level, so that any filter that lets an event through keeps its request span
            // (a span below the filter's level is not recorded, and its events would lose the id).
            let span = tracing::error_span!("request", request_id = %id);
            REQUEST_ID.scope(id, work.instrument(span)).await
        }
        None => work.await,
    }
}
