//! Releases, one file per action: upload (multipart: `model`, `notes`, optional `version`,
//! files `image_a` and `image_b`), list, show, delete. The rules of an upload are
//! [`crate::domain::release`]'s.

pub mod delete;
pub mod list;
pub mod show;
pub mod upload;

mod views;

use crate::api::state::AppState;
use axum::extract::DefaultBodyLimit;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
pub use views::ReleaseList;
use views::UPLOAD_LIMIT;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(upload::upload_release, list::list_releases))
        .layer(DefaultBodyLimit::max(UPLOAD_LIMIT))
        .merge(OpenApiRouter::new().routes(routes!(show::get_release, delete::delete_release)))
}
