//! Reading a device's JSON body, only after it authenticated.

use crate::api::error::ApiError;
use crate::transport::BodyError;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// The largest device request body (a report of 16 events, a check-in): the router's limit.
const DEVICE_BODY_LIMIT: usize = super::super::JSON_BODY_LIMIT;

/// Read a device's body (the handler has authenticated it: [`crate::api::auth::Device`] runs
/// first). Over the limit: 413; not all of it in time: 408 (the device retries); a broken
/// connection: 400.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, DEVICE_BODY_LIMIT)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(cause) = source {
                // The body's own deadline, or the connection's inactivity timeout.
                let timed_out =
                    matches!(cause.downcast_ref::<BodyError>(), Some(BodyError::TimedOut))
                        || cause
                            .downcast_ref::<std::io::Error>()
                            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
                if timed_out {
                    return ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "the request body did not arrive in time",
                    );
                }
                if cause.is::<http_body_util::LengthLimitError>() {
                    return ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "request body too large",
                    );
                }
                source = cause.source();
            }
            ApiError::bad_request("invalid_body", format!("cannot read the request body: {e}"))
        })
}

/// Parse a JSON body after authentication (so a stranger learns nothing from parse errors):
/// the content type first, so a body of the wrong type is never read. Takes the request whole
/// (its extractor is the handler's last), so its headers are read where they are instead of
/// copied for the handler.
pub(crate) async fn parse_body<T: DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ));
    }
    Ok(serde_json::from_slice(&read_body(req.into_body()).await?)?)
}
