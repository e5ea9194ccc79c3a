//! Every request gets an id: the client's `x-request-id` when it sent a valid one (a UUID), a new
//! UUID otherwise. The id is in the request's log lines (the trace span carries it), in the
//! response's `x-request-id` header and in every error body (`request_id`), so an operator can
//! find the server's log of a failed call; the CLI prints it with the error.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};

/// The header that carries the id, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being answered, if called while answering one.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The id a request carries: the client's, if it is a UUID, else a new one.
fn id_of(req: &Request) -> String {
    req.headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v).ok())
        .unwrap_or_else(uuid::Uuid::new_v4)
        .hyphenated()
        .to_string()
}

/// Settle a request's id: the client's if it sent a valid one, else a new one, put on the
/// request (for its trace span, [`span`]). Returns it as text (for [`scope`]) and as the header
/// value the response carries back.
pub fn settle(req: &mut Request) -> (String, HeaderValue) {
    let id = id_of(req);
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"));
    req.headers_mut().insert(HEADER, value.clone());
    (id, value)
}

/// Run `answer` with `id` as the [`current`] request's id (error bodies carry it).
pub async fn scope<F: std::future::Future>(id: String, answer: F) -> F::Output {
    CURRENT.scope(id, answer).await
}

/// The trace span of a request: method, path and its id, in every log line it writes.
pub fn span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder();
        if let Some(id) = id {
            b = b.header("x-request-id", id);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn a_client_uuid_is_kept_anything_else_replaced() {
        let mine = "9b2f8a4e-3c1d-4e5f-8a6b-7c8d9e0f1a2b";
        assert_eq!(id_of(&request(Some(mine))), mine);
        assert_eq!(
            id_of(&request(Some(&mine.to_uppercase()))),
            mine,
            "kept, in canonical form"
        );
        for bad in [
            None,
            Some("x"),
            Some("'; DROP TABLE"),
            Some(&"a".repeat(300)),
        ] {
            let id = id_of(&request(bad));
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{bad:?} -> {id}");
            assert_ne!(Some(id.as_str()), bad);
        }
    }
}
