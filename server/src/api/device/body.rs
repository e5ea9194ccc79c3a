//! Reading a device's JSON body, only after it authenticated.

use crate::api::error::ApiError;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

/// Parse a JSON body after authentication (so a stranger learns nothing from parse errors).
pub(crate) fn parse_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ));
    }
    Ok(serde_json::from_slice(body)?)
}
