//! The connection layer under the HTTP API: what a hostile client can hold, and for how long.
//!
//! `axum::serve` accepts every connection and keeps it as long as the peer likes. A server
//! reachable by 100,000 devices over the internet must not: a thousand clients that open a
//! connection and stall (before their headers, inside a body, or idle between requests) would
//! hold sockets, tasks and buffered bytes for ever. This accept loop bounds each:
//!
//! - **connections**: at most [`ConnectionLimits::max_connections`] at once; beyond that the
//!   loop stops accepting (new peers wait in the kernel's backlog) until one closes;
//! - **headers**: the whole request head within `header_read_timeout` (hyper's own timer), and at
//!   most [`MAX_HEAD_BUFFER`] bytes of it buffered per connection;
//! - **inactivity**: a connection on which nothing moves in either direction for `idle_timeout`
//!   is closed (a kept-alive connection between requests, a client that stopped sending its body
//!   or stopped reading its answer); a slow download that keeps moving is never cut;
//! - **bodies**: a request's whole body must arrive within `body_read_timeout` of its head, and
//!   at most `max_inflight_bodies` bodies are being read at once, so the memory that request
//!   bodies can pin is bounded by that count times the largest body a route accepts. The permit
//!   is taken when a handler starts reading, which is after it authenticated the caller: an
//!   unauthenticated client never gets a byte of its body read;
//! - **TLS**: optional (rustls), with the handshake bounded by `header_read_timeout` too.
//!
//! Shutdown is graceful: stop accepting, let in-flight requests finish (idle connections close
//! at once), then return.

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls;
use tokio_util::sync::PollSemaphore;

/// Most bytes of a request head buffered per connection (hyper's read buffer; its default is
/// about 400 KB). The API answers a head over 16 KB with a JSON 431 (`api::edge`); one
/// over this never reaches it: hyper answers a bare 431 and closes.
pub const MAX_HEAD_BUFFER: usize = 128 * 1024;

/// What one client may hold. Defaults suit a fleet of devices on slow cellular links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// From a connection's start (or the first byte of a later request) to its head's end.
    pub header_read_timeout: Duration,
    /// Nothing read or written for this long closes the connection.
    pub idle_timeout: Duration,
    /// From a request's head to the end of its body.
    pub body_read_timeout: Duration,
    /// Request bodies being read at once.
    pub max_inflight_bodies: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_inflight_bodies: 256,
        }
    }
}

/// A TLS certificate chain and key, loaded and checked (PEM files).
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Load a PEM certificate chain (leaf first) and its PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?;
        if certs.is_empty() {
            anyhow::bail!("no certificate in {}", cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("cannot read TLS private key {}", key.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Serve `app` on `listener` within `limits` until `shutdown` resolves; then stop accepting and
/// wait for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let bodies = Arc::new(Semaphore::new(limits.max_inflight_bodies.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small JSON answers and Range responses must not wait for Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = BoundedBodies {
            app: app.clone(),
            bodies: bodies.clone(),
            body_read_timeout: limits.body_read_timeout,
        };
        let http = http.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let served = match tls {
                None => {
                    let io = TokioIo::new(Inactivity::new(tcp, limits.idle_timeout));
                    watcher.watch(http.serve_connection(io, service)).await
                }
                Some(tls) => {
                    let handshake = tokio::time::timeout(
                        limits.header_read_timeout,
                        tls.acceptor
                            .accept(Inactivity::new(tcp, limits.idle_timeout)),
                    )
                    .await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The app behind a bound on request bodies: each body gets a deadline and a read permit.
#[derive(Clone)]
struct BoundedBodies {
    app: Router,
    bodies: Arc<Semaphore>,
    body_read_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for BoundedBodies {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        use tower::ServiceExt as _;
        let deadline = Instant::now() + self.body_read_timeout;
        let bodies = self.bodies.clone();
        let request =
            request.map(|incoming| Body::new(BoundedBody::new(incoming, deadline, bodies)));
        let app = self.app.clone();
        Box::pin(app.oneshot(request))
    }
}

/// Why reading a body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not all of it arrived in time.
    #[error("the request body did not arrive within its time limit")]
    TimedOut,
    /// The connection failed.
    #[error(transparent)]
    Connection(#[from] hyper::Error),
}

/// A request body with a deadline for all of it, read only while holding one of a bounded
/// number of permits (taken at the first read, released at its end or when it is dropped).
struct BoundedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    permits: PollSemaphore,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    done: bool,
}

impl BoundedBody {
    fn new(inner: Incoming, deadline: Instant, permits: Arc<Semaphore>) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            permits: PollSemaphore::new(permits),
            permit: None,
            done: false,
        }
    }
}

impl hyper::body::Body for BoundedBody {
    type Data = axum::body::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.done || this.inner.is_end_stream() {
            this.permit = None;
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.done = true;
            this.permit = None;
            return Poll::Ready(Some(Err(BodyError::TimedOut)));
        }
        if this.permit.is_none() {
            // `None` only if the semaphore were closed, which it never is: read without one
            // rather than fail.
            if let Some(permit) = ready!(this.permits.poll_acquire(cx)) {
                this.permit = Some(permit);
            }
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() {
            this.done = true;
            this.permit = None;
        }
        Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A stream that fails with `TimedOut` once nothing has moved in either direction for `idle`
/// while someone waits on it.
struct Inactivity<S> {
    io: S,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<S> Inactivity<S> {
    fn new(io: S, idle: Duration) -> Self {
        Self {
            io,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn moved(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.idle);
    }

    /// Called when the stream is pending: has the quiet lasted too long?
    fn expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection inactive",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inactivity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.expired(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inactivity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.expired(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.expired(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => self.expired(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
