//! `GET /api/v1/stream` (viewer): Server-Sent Events of what happens — `anomaly.open`,
//! `anomaly.update`, `anomaly.resolve`, `anomaly.handled` (a person acknowledged,
//! resolved or silenced it) and `insight` — read from the state store's feed, so every
//! event has a sequence number as its SSE `id`. A client that reconnects with
//! `Last-Event-ID` (or `?last_event_id=`) gets everything after it, across restarts of
//! sqlvigil; a new one starts at the present. Only the token's instances are streamed
//! (`?instance=` narrows further). The stream ends when sqlvigil shuts down.

use crate::auth::Caller;
use crate::params::Params;
use crate::{ApiError, AppState};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures::Stream;
use sqlvigil_model::query::Instances;
use sqlvigil_model::FeedEntry;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

/// How often an idle stream looks for new entries.
const POLL: Duration = Duration::from_millis(250);
/// Entries read at a time.
const BATCH: usize = 500;

/// Where a stream goes on from.
struct Cursor {
    app: AppState,
    instances: Instances,
    after: i64,
    pending: VecDeque<FeedEntry>,
}

/// The sequence number to continue after: the `Last-Event-ID` header, else the
/// `last_event_id` parameter, else none (start at the present).
fn resume_point(headers: &HeaderMap, p: &Params) -> Result<Option<i64>, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("").to_string());
    match header.or_else(|| p.string("last_event_id")) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "Last-Event-ID must be the id of an event of this stream, got `{v}`"
            ))
        }),
    }
}

pub(crate) async fn stream(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let p = Params::new(q, &["last_event_id", "instance"])?;
    let after = match resume_point(&headers, &p)? {
        Some(seq) => seq,
        None => app.on_state(|s| s.feed_head()).await?,
    };
    let cursor = Cursor {
        instances: caller.instances(p.string("instance")),
        app,
        after,
        pending: VecDeque::new(),
    };
    let events = futures::stream::unfold(cursor, |mut c| async move {
        let entry = next_entry(&mut c).await?;
        Some((Ok(event(&entry)), c))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The next entry, waiting for one; `None` once sqlvigil shuts down or the feed cannot
/// be read (the client reconnects with its last id).
async fn next_entry(c: &mut Cursor) -> Option<FeedEntry> {
    loop {
        if let Some(e) = c.pending.pop_front() {
            c.after = e.seq;
            return Some(e);
        }
        let (state, instances, after) = (c.app.state.clone(), c.instances.clone(), c.after);
        let read =
            tokio::task::spawn_blocking(move || state.feed_after(Some(after), &instances, BATCH))
                .await;
        match read {
            Ok(Ok(batch)) if !batch.is_empty() => c.pending.extend(batch),
            Ok(Ok(_)) => {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = c.app.closing.cancelled() => return None,
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("live stream: the feed cannot be read: {e}");
                return None;
            }
            Err(e) => {
                tracing::warn!("live stream: {e}");
                return None;
            }
        }
        if c.app.closing.is_cancelled() {
            return None;
        }
    }
}

fn event(e: &FeedEntry) -> Event {
    let data = serde_json::json!({
        "seq": e.seq,
        "kind": e.kind,
        "instance": e.instance,
        "at": e.at,
        "data": e.body,
    });
    Event::default()
        .id(e.seq.to_string())
        .event(e.kind.as_str())
        .data(data.to_string())
}
