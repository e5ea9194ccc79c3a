//! `GET`/`HEAD /v1/artifacts/{sha256}`: signed images by content address.
//!
//! Immutable by construction, so: a strong ETag (the address itself), `Cache-Control: public,
//! max-age=31536000, immutable`, and single-range requests so a device on a dropped 4G link
//! resumes from the last byte it wrote (206, or 416 with `Content-Range: bytes */size`). The file
//! is streamed from disk in chunks, never read whole. With a CDN configured, requests are
//! redirected there instead.

use crate::api::error::{ApiError, ApiPath, ErrorBody};
use crate::api::state::AppState;
use crate::artifacts::{is_sha256_hex, ArtifactSource};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::io::SeekFrom;
use std::sync::Arc;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(get_artifact, head_artifact))
}

const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// The pattern of an artifact address, as [`is_sha256_hex`] accepts it.
const ADDRESS_PATTERN: &str = "^[0-9a-f]{64}$";

/// An artifact address, for the API document.
#[derive(Debug)]
struct ArtifactAddress;

impl utoipa::PartialSchema for ArtifactAddress {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(ADDRESS_PATTERN))
            .description(Some("SHA-256 of the file: 64 lowercase hex digits"))
            .into()
    }
}

impl utoipa::ToSchema for ArtifactAddress {}

/// A byte range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header: send everything.
    Full,
    /// One satisfiable range.
    Partial { start: u64, end: u64 },
    /// A well-formed range that lies outside the file.
    Unsatisfiable,
}

/// Interpret a `Range` header for a file of `size` bytes. Malformed headers and multi-range
/// requests are ignored (a full 200), as RFC 9110 allows.
pub fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), num(first), num(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial {
                    start: size.saturating_sub(n),
                    end: size - 1,
                }
            }
        }
        // bytes=S- or bytes=S-E.
        (false, Some(start), end) => {
            if !last.trim().is_empty() && end.is_none() {
                return RangeRequest::Full;
            }
            if let Some(e) = end {
                if e < start {
                    return RangeRequest::Full;
                }
            }
            if start >= size {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Partial {
                start,
                end: end.map_or(size - 1, |e| e.min(size - 1)),
            }
        }
        _ => RangeRequest::Full,
    }
}

/// Download an artifact (Range supported).
#[utoipa::path(
    get,
    path = "/v1/artifacts/{sha256}",
    tag = "artifacts",
    params(
        ("sha256" = inline(ArtifactAddress), Path, description = "SHA-256 of the file, 64 lowercase hex digits"),
        ("Range" = Option<String>, Header, description = "One range, e.g. bytes=4096-"),
    ),
    responses(
        (status = 200, description = "The whole file", content_type = "application/octet-stream"),
        (status = 206, description = "The requested range", content_type = "application/octet-stream"),
        (status = 302, description = "Redirect to the configured CDN"),
        (status = 304, description = "If-None-Match matched"),
        (status = 400, description = "Not a SHA-256 address", body = ErrorBody),
        (status = 404, description = "No such artifact", body = ErrorBody),
        (status = 416, description = "Range outside the file", body = ErrorBody),
    )
)]
async fn get_artifact(
    State(state): State<Arc<AppState>>,
    ApiPath(sha256): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&state, &sha256, &headers, false).await
}

/// Artifact metadata: the same headers as GET, no body.
#[utoipa::path(
    head,
    path = "/v1/artifacts/{sha256}",
    tag = "artifacts",
    params(("sha256" = inline(ArtifactAddress), Path, description = "SHA-256 of the file, 64 lowercase hex digits")),
    responses(
        (status = 200, description = "Exists; Content-Length is its size"),
        (status = 400, description = "Not a SHA-256 address"),
        (status = 404, description = "No such artifact"),
    )
)]
async fn head_artifact(
    State(state): State<Arc<AppState>>,
    ApiPath(sha256): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&state, &sha256, &headers, true).await
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn serve(
    state: &AppState,
    sha256: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    if !is_sha256_hex(sha256) {
        return Err(ApiError::bad_request(
            "invalid_sha256",
            "an artifact address is 64 lowercase hex digits",
        ));
    }
    if let Some(cdn) = &state.config.cdn_base_url {
        let location = format!("{}/{sha256}", cdn.trim_end_matches('/'));
        return Ok((
            StatusCode::FOUND,
            [(header::LOCATION, header_value(&location))],
        )
            .into_response());
    }
    let local = state
        .artifacts
        .get(sha256)
        .await
        .map_err(ApiError::internal)?;
    let artifact = match local {
        Some(artifact) => artifact,
        // Uploaded through another replica: its bytes are in the database.
        None => match state.store.artifact_bytes(sha256).await? {
            Some(bytes) => state
                .artifacts
                .adopt(sha256, bytes)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "stored artifact {sha256} does not match its address"
                    ))
                })?,
            None => {
                return Err(ApiError::not_found(
                    "artifact_not_found",
                    format!("no artifact {sha256}"),
                ))
            }
        },
    };
    let size = artifact.size;
    let etag = format!("\"{sha256}\"");
    let common = [
        (header::ETAG, header_value(&etag)),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
    ];
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    // A Range with an If-Range for another version is ignored; ours never changes, but a
    // client may hold a different address's validator.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = if if_range_ok {
        parse_range(
            headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
            size,
        )
    } else {
        RangeRequest::Full
    };
    let (status, start, len) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the artifact is {size} bytes"),
            )
            .into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            h.extend(common);
            return Ok(response);
        }
    };
    let mut response = if head {
        Response::new(Body::empty())
    } else {
        state.metrics.artifact_bytes.inc_by(len);
        match artifact.source {
            ArtifactSource::Memory(bytes) => {
                // Zero-copy: a view of the cached file.
                let (start, end) = (start as usize, (start + len) as usize);
                Response::new(Body::from(bytes.slice(start..end)))
            }
            ArtifactSource::File(mut file) => {
                file.seek(SeekFrom::Start(start))
                    .await
                    .map_err(ApiError::internal)?;
                let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024);
                Response::new(Body::from_stream(stream))
            }
        }
    };
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.extend(common);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {start}-{}/{size}", start + len - 1)),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_documented_address_pattern_is_the_check() {
        let re = regex::Regex::new(super::ADDRESS_PATTERN).unwrap();
        let good = "ab".repeat(32);
        for s in [
            good.clone(),
            good.to_uppercase(),
            "ab".repeat(31),
            format!("{good}a"),
            "zz".repeat(32),
        ] {
            assert_eq!(re.is_match(&s), super::is_sha256_hex(&s), "{s}");
        }
    }

    use super::{parse_range, RangeRequest::*};

    #[test]
    fn ranges() {
        let p = |v: &str| parse_range(Some(v), 1000);
        assert_eq!(parse_range(None, 1000), Full);
        assert_eq!(p("bytes=0-99"), Partial { start: 0, end: 99 });
        assert_eq!(
            p("bytes=500-"),
            Partial {
                start: 500,
                end: 999
            }
        );
        assert_eq!(
            p("bytes=900-5000"),
            Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            p("bytes=-100"),
            Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(p("bytes=-5000"), Partial { start: 0, end: 999 });
        assert_eq!(p("bytes=1000-"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-6",
            "bytes=abc",
            "items=0-1",
            "bytes=5-1",
            "bytes=",
            "bytes=1-x",
            "bytes=+1-2",
        ] {
            assert_eq!(p(ignored), Full, "{ignored}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }
}
