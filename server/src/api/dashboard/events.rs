//! `GET /v1/rollouts/{id}/events`: a rollout's status as server-sent events.
//!
//! One `status` event (the body of `GET /v1/rollouts/{id}`) at once, then another whenever the
//! engine reports a change: at once for a state change (a halt, an advance, a pause...), and at
//! most once per [`PROGRESS_EVERY`] while devices move (offers, reports, time-outs), so a
//! 100,000-device stage does not make a status per report. Nothing here polls the fleet: with
//! no change, no status is computed. A keep-alive comment every 15 s keeps proxies and the
//! server's idle limit from closing a quiet stream; the stream ends when the client goes, the
//! rollout is gone, or the server shuts down.
//!
//! However many streams watch a rollout, its status is computed once per change or tick and
//! shared ([`LiveStatuses`](crate::api::live::LiveStatuses)).
//!
//! Changes are this replica's own: with several replicas, a halt another one decided reaches
//! this stream with the next progress here, not at once.

use crate::api::admin::rollouts::RolloutStatus;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiPath};
use crate::api::live::Shared;
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::rollout::control;
use crate::rollout::engine::Change;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::StreamExt;

/// Progress (counts) is sent at most this often (and no more often than twice the time the
/// last status took to compute); state changes go at once.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Stream a rollout's status as it changes.
pub(super) async fn rollout_events(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<impl IntoResponse, ApiError> {
    admin.require(Role::Viewer)?;
    // A rollout that does not exist is refused here, as a status would be.
    control::rollout(&state.store, id).await?;
    let (mut statuses, start) = state.live.watch(id);
    if let Some(shared) = start {
        // Subscribe before the first status, so no change falls between the two.
        let changes = state.engine.subscribe();
        tokio::spawn(follow(state.clone(), id, changes, shared));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    let mut stopping = state.stopping.subscribe();
    tokio::spawn(async move {
        loop {
            let latest = statuses.borrow_and_update().clone();
            if let Some(json) = latest {
                if tx.send(event(&json)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                changed = statuses.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-cache")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    ))
}

async fn status(state: &AppState, id: i64) -> Result<RolloutStatus, ApiError> {
    let r = control::rollout(&state.store, id).await?;
    crate::api::admin::rollouts::status_of(state, &r).await
}

fn event(json: &str) -> Event {
    Event::default().event("status").data(json)
}

/// Compute rollout `id`'s status at once and again at every change of it, for every stream
/// watching it, until none does, the rollout is gone, or the server shuts down.
async fn follow(
    state: Arc<AppState>,
    id: i64,
    mut changes: tokio::sync::broadcast::Receiver<Change>,
    shared: Arc<Shared>,
) {
    let mut stopping = state.stopping.subscribe();
    // The first status is due at once.
    let mut dirty = true;
    let mut send_now = true;
    // When progress may be sent next: PROGRESS_EVERY after the last status, or twice as long
    // as that status took to compute, whichever is later, so that watching a rollout takes at
    // most a third of a core of status work however large it is (a state change goes at once).
    let mut next_progress = tokio::time::Instant::now();
    loop {
        if *stopping.borrow_and_update() {
            state.live.leave(id, &shared, true);
            return;
        }
        if shared.receiver_count() == 0 && state.live.leave(id, &shared, false) {
            return;
        }
        if send_now {
            dirty = false;
            let started = tokio::time::Instant::now();
            let computed = status(&state, id).await;
            next_progress = tokio::time::Instant::now() + PROGRESS_EVERY.max(started.elapsed() * 2);
            match computed {
                Ok(s) => {
                    state.metrics.live_statuses.inc();
                    let json: Arc<str> = serde_json::to_string(&s).unwrap_or_default().into();
                    shared.send_replace(Some(json));
                }
                Err(e) if e.status == 404 => {
                    // Dropping the last sender ends every stream of the rollout.
                    state.live.leave(id, &shared, true);
                    return;
                }
                // The database is away for now: try again with the next tick.
                Err(_) => dirty = true,
            }
        }
        send_now = tokio::select! {
            _ = stopping.changed() => false,
            change = changes.recv() => match change {
                Ok(Change::State(r)) if r == id => true,
                Ok(Change::Progress(r)) if r == id => { dirty = true; false }
                Ok(_) => false,
                // Fell behind: whatever was missed, the next status shows it.
                Err(RecvError::Lagged(_)) => { dirty = true; false }
                Err(RecvError::Closed) => {
                    state.live.leave(id, &shared, true);
                    return;
                }
            },
            _ = tokio::time::sleep_until(next_progress), if dirty => true,
            // Now and then with nothing to send: is anybody still watching?
            _ = tokio::time::sleep(PROGRESS_EVERY), if !dirty => false,
        };
    }
}
