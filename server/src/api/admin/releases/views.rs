//! The JSON bodies the release routes answer (the CLI reads them too), and the upload limits.

use crate::store::ReleaseRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest upload request: two slot-sized images plus the text fields.
pub(crate) const UPLOAD_LIMIT: usize = 2 * 1024 * 1024;
/// Longest release notes.
pub(crate) const MAX_NOTES: usize = 16 * 1024;

/// Releases.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseList {
    /// By model, newest version first.
    pub releases: Vec<ReleaseRecord>,
}
