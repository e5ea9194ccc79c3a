//! The admin API client the operator commands share: one base URL, one bearer token, JSON in
//! and out, and failures as one readable line. An https:// server is spoken to with rustls,
//! trusting the system's root certificates and `--ca-cert` (`FOTA_CA_CERT`).
//!
//! Requests run on a small single-threaded tokio runtime owned by the client, so commands stay
//! plain synchronous code.

use super::ServerArgs;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// How long to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take (uploads and large provisioning requests included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer: the server is down, the address is wrong, the network is in the way.
    #[error("cannot reach {url}: {cause}")]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// The innermost cause (`Connection refused (os error 111)`, `timed out`).
        cause: String,
    },
    /// The server answered with its JSON error. The request's id, when the server gave one,
    /// finds the server's log lines of this call.
    #[error("{message}{} ({code})", request_id.as_deref().map(|id| format!(" [request {id}]")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// The stable error code, e.g. `rollout_not_found`.
        code: String,
        /// The server's message.
        message: String,
        /// The request's id (`x-request-id`).
        request_id: Option<String>,
    },
    /// Anything else: a broken answer, a request that could not be built.
    #[error("{0}")]
    Other(String),
}

/// The admin API client.
pub struct Client {
    base: Url,
    auth: HeaderValue,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `--server` with `--token`.
    pub fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let token = args.token.as_deref().map(str::trim).unwrap_or_default();
        if token.is_empty() {
            anyhow::bail!("no admin token: give --token or set FOTA_TOKEN");
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("--token contains characters a token cannot have"))?;
        auth.set_sensitive(true);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // `fota serve` closes a kept-alive connection on which no request starts within
            // 10 s (its header timeout), and this runtime runs only during a request, so that
            // close may not have been read yet: a connection idle for 5 s is not reused (a long
            // `fota demo` phase otherwise ended in a broken pipe on its next upload).
            .pool_idle_timeout(Duration::from_secs(5))
            .user_agent(concat!("fota/", env!("CARGO_PKG_VERSION")))
            // Plain http reads no certificate store.
            .tls_built_in_root_certs(args.server.scheme() == "https");
        if let Some(path) = &args.ca_cert {
            for cert in ca_certificates(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = {
            let _entered = runtime.enter();
            builder
                .build()
                .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {}", innermost(&e)))?
        };
        Ok(Self {
            base: args.server.clone(),
            auth,
            http,
            runtime,
        })
    }

    /// The base URL as people write it (no trailing slash).
    pub fn shown(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// The URL of an API path given as segments (`["v1", "rollouts", "7"]`), each encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// GET, with query parameters; the answer's JSON.
    pub fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, RequestError> {
        let request = self.http.get(self.url(segments)).query(query);
        self.send(request)
    }

    /// DELETE; the answer's JSON (`Null` for 204 No Content).
    pub fn delete(&self, segments: &[&str]) -> Result<Value, RequestError> {
        let request = self.http.delete(self.url(segments));
        self.send(request)
    }

    /// POST a JSON body (or none); the answer's JSON.
    pub fn post_json(
        &self,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, RequestError> {
        let mut request = self.http.request(Method::POST, self.url(segments));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request)
    }

    /// POST raw bytes with a content type; the answer's JSON.
    pub fn post_bytes(
        &self,
        segments: &[&str],
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<Value, RequestError> {
        let request = self
            .http
            .post(self.url(segments))
            .header(CONTENT_TYPE, content_type)
            .body(body);
        self.send(request)
    }

    /// POST a multipart form; the answer's JSON.
    pub fn post_form(
        &self,
        segments: &[&str],
        form: reqwest::multipart::Form,
    ) -> Result<Value, RequestError> {
        let request = self.http.post(self.url(segments)).multipart(form);
        self.send(request)
    }

    /// Turn an answer into the type the API documents for it.
    pub fn decode<T: DeserializeOwned>(&self, value: Value) -> anyhow::Result<T> {
        serde_json::from_value(value).map_err(|e| {
            anyhow::anyhow!(
                "unexpected answer from {} (is it a fota server of this version?): {e}",
                self.shown()
            )
        })
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, RequestError> {
        let request = request.header(reqwest::header::AUTHORIZATION, self.auth.clone());
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| self.transport_error(&e))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| self.transport_error(&e))?;
            if !status.is_success() {
                return Err(api_error(status, &body, &self.shown()));
            }
            if body.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&body).map_err(|e| {
                RequestError::Other(format!(
                    "unexpected answer from {} (HTTP {status}, not JSON: {e})",
                    self.shown()
                ))
            })
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> RequestError {
        if e.is_builder() {
            return RequestError::Other(format!("cannot build the request: {}", innermost(e)));
        }
        let cause = if e.is_timeout() {
            "timed out".to_string()
        } else {
            innermost(e)
        };
        if e.is_connect() || e.is_timeout() || e.is_request() {
            let cause = if self.base.scheme() == "https" {
                certificate_hint(cause)
            } else {
                cause
            };
            RequestError::Unreachable {
                url: self.shown(),
                cause,
            }
        } else {
            RequestError::Other(format!("request to {} failed: {cause}", self.shown()))
        }
    }
}

/// A certificate the client refused, with what to do about it.
fn certificate_hint(cause: String) -> String {
    if cause.contains("CaUsedAsEndEntity") {
        // `openssl req -x509` makes such a certificate unless told otherwise.
        format!(
            "{cause} (the server presents a CA certificate as its own: make its self-signed \
             certificate with basicConstraints CA:FALSE, or sign a server certificate with that CA)"
        )
    } else if cause.contains("certificate") {
        format!(
            "{cause} (the server's certificate is not trusted: give its CA with --ca-cert FILE or \
             FOTA_CA_CERT)"
        )
    } else {
        cause
    }
}

/// The certificates of a PEM file (`--ca-cert`): at least one, or a one-line error.
fn ca_certificates(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let shown = path.display();
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read --ca-cert {shown}: {e}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        anyhow::anyhow!("--ca-cert {shown}: not PEM certificates: {}", innermost(&e))
    })?;
    if certs.is_empty() {
        anyhow::bail!("--ca-cert {shown} holds no PEM certificate");
    }
    Ok(certs)
}

/// The innermost cause of an error: `Connection refused (os error 111)` rather than reqwest's
/// `error sending request for url (...)`.
fn innermost(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The server's JSON error, or a short description of whatever else came back.
fn api_error(status: StatusCode, body: &[u8], server: &str) -> RequestError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        message: String,
        #[serde(default)]
        request_id: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => RequestError::Api {
            status: status.as_u16(),
            code: e.error,
            message: e.message,
            request_id: e.request_id,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let first = text.lines().next().unwrap_or("").trim();
            let mut shown: String = first.chars().take(200).collect();
            if shown.is_empty() {
                shown = "no error body".into();
            }
            RequestError::Other(format!("{server} answered HTTP {status}: {shown}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(server: &str) -> Client {
        Client::new(&ServerArgs {
            server: super::super::parse_server_url(server).unwrap(),
            token: Some("fota_admin_x".into()),
            ca_cert: None,
        })
        .unwrap()
    }

    #[test]
    fn urls_encode_segments_and_keep_a_base_path() {
        let c = client("http://127.0.0.1:8080");
        assert_eq!(
            c.url(&["v1", "devices", "a/b c"]).as_str(),
            "http://127.0.0.1:8080/v1/devices/a%2Fb%20c"
        );
        let c = client("http://h/fota/");
        assert_eq!(c.url(&["v1", "audit"]).as_str(), "http://h/fota/v1/audit");
        assert_eq!(c.shown(), "http://h/fota");
        assert!(!format!("{c:?}").contains("fota_admin_x"));
    }

    #[test]
    fn refused_certificates_say_what_to_do() {
        let untrusted = certificate_hint("invalid peer certificate: UnknownIssuer".into());
        assert!(untrusted.ends_with("give its CA with --ca-cert FILE or FOTA_CA_CERT)"));
        let ca_as_leaf = certificate_hint(
            "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))".into(),
        );
        assert!(
            ca_as_leaf.contains("basicConstraints CA:FALSE"),
            "{ca_as_leaf}"
        );
        assert_eq!(certificate_hint("timed out".into()), "timed out");
    }

    #[test]
    fn errors_read_as_one_line() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"rollout_not_found","message":"no rollout 9"}"#,
            "http://h",
        );
        assert_eq!(e.to_string(), "no rollout 9 (rollout_not_found)");
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"rollout_not_found","message":"no rollout 9","request_id":"9b2f8a4e-3c1d-4e5f-8a6b-7c8d9e0f1a2b"}"#,
            "http://h",
        );
        assert_eq!(
            e.to_string(),
            "no rollout 9 [request 9b2f8a4e-3c1d-4e5f-8a6b-7c8d9e0f1a2b] (rollout_not_found)"
        );
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>\nbad", "http://h");
        assert_eq!(
            e.to_string(),
            "http://h answered HTTP 502 Bad Gateway: <html>"
        );
    }
}
