//! `GET /v1/rollouts/{id}/timeline`: a rollout's confirmations and failures over time, for the
//! dashboard's chart. The page draws it once, then extends it with the totals its event stream
//! brings, so nothing here is asked again while the page stays open.

use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiPath, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::domain::{DeviceState, RolloutState};
use crate::rollout::control;
use crate::store::{now_ms, DecidedBucket};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// Points a timeline has at most (past the first): enough for a chart, few enough to send.
pub const MAX_POINTS: i64 = 60;

/// Cumulative decided devices at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelinePoint {
    /// Unix ms.
    pub at: i64,
    /// Devices confirmed on the new release by then.
    pub confirmed: i64,
    /// Devices failed, rolled back or timed out by then.
    pub failures: i64,
}

/// A rollout's confirmations and failures over time.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Timeline {
    /// The rollout.
    pub rollout_id: i64,
    /// When it started (Unix ms): the first point.
    pub from: i64,
    /// The last point: now for an unfinished rollout, when it ended for a finished one.
    pub to: i64,
    /// Time between points (ms).
    pub bucket_ms: i64,
    /// Cumulative counts from `from` to `to`, one per bucket and one at the start; the last
    /// one is the rollout's totals.
    pub points: Vec<TimelinePoint>,
}

/// Confirmations and failures of a rollout over time: cumulative counts at most 61 moments
/// evenly spread from its start to now (or to its end), by when each device was decided.
#[utoipa::path(
    get,
    path = "/v1/rollouts/{id}/timeline",
    tag = "rollouts",
    params(("id" = i64, Path, description = "Rollout id")),
    responses((status = 200, body = Timeline), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub(super) async fn rollout_timeline(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<Timeline>, ApiError> {
    admin.require(Role::Viewer)?;
    let r = control::rollout(&state.store, id).await?;
    let from = r.created_at;
    let finished = !RolloutState::UNFINISHED.contains(&r.state);
    let to = if finished { r.updated_at } else { now_ms() }.max(from + 1);
    let bucket_ms = ((to - from + MAX_POINTS - 1) / MAX_POINTS).max(1000);
    let buckets = state.store.decided_buckets(id, from, bucket_ms).await?;
    Ok(axum::Json(timeline(id, from, to, bucket_ms, &buckets)))
}

/// Cumulative points from per-bucket counts; devices decided after `to` (a late report to a
/// finished rollout) count in the last point.
fn timeline(id: i64, from: i64, to: i64, bucket_ms: i64, buckets: &[DecidedBucket]) -> Timeline {
    let n = ((to - from + bucket_ms - 1) / bucket_ms).max(1);
    let mut confirmed = vec![0i64; n as usize];
    let mut failures = vec![0i64; n as usize];
    for b in buckets {
        let i = b.bucket.clamp(0, n - 1) as usize;
        if b.state == DeviceState::Confirmed.as_str() {
            confirmed[i] += b.devices;
        } else {
            failures[i] += b.devices;
        }
    }
    let mut points = Vec::with_capacity(n as usize + 1);
    let (mut c, mut f) = (0, 0);
    points.push(TimelinePoint {
        at: from,
        confirmed: 0,
        failures: 0,
    });
    for i in 0..n as usize {
        c += confirmed[i];
        f += failures[i];
        points.push(TimelinePoint {
            at: (from + (i as i64 + 1) * bucket_ms).min(to),
            confirmed: c,
            failures: f,
        });
    }
    Timeline {
        rollout_id: id,
        from,
        to,
        bucket_ms,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(bucket: i64, state: DeviceState, devices: i64) -> DecidedBucket {
        DecidedBucket {
            bucket,
            state: state.as_str().to_string(),
            devices,
        }
    }

    #[test]
    fn points_are_cumulative_and_end_at_the_totals() {
        let t = timeline(
            7,
            10_000,
            13_500,
            1000,
            &[
                bucket(0, DeviceState::Confirmed, 2),
                bucket(2, DeviceState::RolledBack, 1),
                bucket(2, DeviceState::TimedOut, 1),
                // Decided after the end: counted in the last point.
                bucket(9, DeviceState::Confirmed, 3),
            ],
        );
        let at: Vec<_> = t.points.iter().map(|p| p.at).collect();
        assert_eq!(at, [10_000, 11_000, 12_000, 13_000, 13_500]);
        let counts: Vec<_> = t.points.iter().map(|p| (p.confirmed, p.failures)).collect();
        assert_eq!(counts, [(0, 0), (2, 0), (2, 0), (2, 2), (5, 2)]);
    }

    #[test]
    fn an_empty_rollout_has_a_flat_line() {
        let t = timeline(1, 0, 1, 1000, &[]);
        assert_eq!(t.points.len(), 2);
        assert!(t.points.iter().all(|p| p.confirmed == 0 && p.failures == 0));
    }
}
