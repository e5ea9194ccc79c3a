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
//! Changes are this replica's own: with several replicas, a halt another one decided reaches
//! this stream with the next progress here, not at once.

use crate::api::admin::rollouts::RolloutStatus;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiPath};
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

/// Progress (counts) is sent at most this often; state changes go at once.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Stream a rollout's status as it changes.
pub(super) async fn rollout_events(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<impl IntoResponse, ApiError> {
    admin.require(Role::Viewer)?;
    // Subscribe before the first status, so no change falls between the two.
    let changes = state.engine.subscribe();
    let first = status(&state, id).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    tx.send(event(&first)).await.ok();
    tokio::spawn(follow(state, id, changes, tx));
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

fn event(status: &RolloutStatus) -> Event {
    Event::default()
        .event("status")
        .data(serde_json::to_string(status).unwrap_or_default())
}

/// Send a status for every change of rollout `id` until the client goes or the server stops.
async fn follow(
    state: Arc<AppState>,
    id: i64,
    mut changes: tokio::sync::broadcast::Receiver<Change>,
    tx: tokio::sync::mpsc::Sender<Event>,
) {
    let mut stopping = state.stopping.subscribe();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        if *stopping.borrow_and_update() {
            return;
        }
        let send_now = tokio::select! {
            _ = stopping.changed() => continue,
            _ = tx.closed() => return,
            change = changes.recv() => match change {
                Ok(Change::State(r)) if r == id => true,
                Ok(Change::Progress(r)) if r == id => { dirty = true; false }
                Ok(_) => false,
                // Fell behind: whatever was missed, the next status shows it.
                Err(RecvError::Lagged(_)) => { dirty = true; false }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => std::mem::take(&mut dirty),
        };
        if !send_now {
            continue;
        }
        match status(&state, id).await {
            Ok(s) => {
                if tx.send(event(&s)).await.is_err() {
                    return;
                }
            }
            Err(e) if e.status == 404 => return,
            // The database is away for now: try again with the next tick.
            Err(_) => dirty = true,
        }
    }
}
