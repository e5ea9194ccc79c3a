//! The API document (`/openapi.json`): generated from the route table, then completed with the
//! refusals every route shares, so that a client generated from it knows every status the
//! server can answer. Each route documents its own answers and rule-specific refusals; this
//! adds, to every operation where they can happen:
//!
//! - 400 when it takes path or query parameters (`invalid_path`, `invalid_query`: a malformed
//!   value, an id beyond 64 bits) or a body (`malformed_json`, `invalid_body`),
//! - 413 and 415 when it takes a body (over the route's limit; not `application/json`), and
//!   408 (`request_timeout`) when the body does not arrive within the body read timeout,
//! - 401 when it needs a token,
//! - 431 everywhere (request headers over 16 KB),
//! - 503 with `Retry-After` on every `/v1` route: the database is unreachable.

use super::error::ErrorBody;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr};
use utoipa::ToSchema as _;

fn error_response(description: &str, retry_after: bool) -> RefOr<Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build(),
    );
    if retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Integer),
                )
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    response.build().into()
}

fn add(op: &mut Operation, status: &str, description: &str, retry_after: bool) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_response(description, retry_after));
}

fn complete(path: &str, op: &mut Operation) {
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_params = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query));
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key("application/json"));
    if has_params || op.request_body.is_some() {
        add(
            op,
            "400",
            "Malformed request: a path or query value, or the body",
            false,
        );
    }
    if op.request_body.is_some() {
        add(op, "413", "Body over this route's limit", false);
        add(
            op,
            "408",
            "The body did not arrive within the body read timeout",
            false,
        );
    }
    if json_body {
        add(op, "415", "The body is not application/json", false);
    }
    if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
        add(op, "401", "Missing or invalid token", false);
    }
    add(op, "431", "Request headers over 16 KB", false);
    if path.starts_with("/v1/") {
        add(op, "503", "The database is unreachable; retry later", true);
    }
}

/// Complete every operation of `doc` with the refusals all routes share (see the module docs).
pub fn add_shared_refusals(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.head,
            &mut item.patch,
            &mut item.options,
        ]
        .into_iter()
        .flatten()
        {
            complete(path, op);
        }
    }
}
