//! Operators' view of the fleet, one file per action: provisioning one device or many, JSON or
//! CSV ([`register`]), listing with filters ([`list`]), one device with its recent events
//! ([`show`]), the fleet summary ([`summary`]). The request and answer types are in `views`,
//! re-exported here, where the CLI reads them too.

pub mod list;
pub mod register;
pub mod revoke;
pub mod show;
pub mod summary;

mod views;

use crate::api::state::AppState;
use axum::extract::DefaultBodyLimit;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
pub use views::{
    DeviceDetail, DevicePage, DeviceSpec, ListQuery, ProvisionedDevice, RegisterDevices,
    Registered, MAX_DEVICES_PER_REQUEST, MAX_TAGS,
};

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(register::register_devices))
        .layer(DefaultBodyLimit::max(32 * 1024 * 1024))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(list::list_devices))
                .routes(routes!(show::get_device))
                .routes(routes!(revoke::revoke_device))
                .routes(routes!(summary::fleet_summary)),
        )
}
