//! Hostile clients at the connection level, against a real server on real sockets (with short
//! limits, so the test takes seconds): every way of holding a connection open without finishing
//! a request is cut off, the connection cap holds, a stranger's body is never read (401 before
//! 413), and the memory an attack pinned is returned once its connections are gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_server::config::ConnectionLimits;
use fota_testkit::{self as testkit, assert_error, Db, TestApp};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 2048,
    header_read_timeout: Duration::from_millis(600),
    idle_timeout: Duration::from_millis(600),
    body_read_timeout: Duration::from_millis(1000),
    max_inflight_bodies: 16,
};

async fn app_with(limits: ConnectionLimits) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::test_config(Db::Sqlite, dir.path()).await;
    config.connections = limits;
    testkit::spawn_with(Db::Sqlite, dir, config).await
}

fn addr(app: &TestApp) -> std::net::SocketAddr {
    app.server.addr
}

/// Read until the server closes; returns what it sent and when it closed, counted from
/// `started`.
async fn until_closed(mut s: TcpStream, started: Instant, within: Duration) -> (Vec<u8>, Duration) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + within),
            s.read(&mut buf),
        )
        .await
        {
            Err(_) => panic!(
                "still open after {within:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A provisioned device and its token.
async fn device(app: &TestApp, id: &str) -> String {
    app.provision(&[(id, "f429", &[])]).await.remove(0)
}

#[tokio::test]
async fn every_stalled_connection_is_closed() {
    let app = app_with(LIMITS).await;
    let token = device(&app, "stall-1").await;
    let close_within = Duration::from_secs(5);
    let started = Instant::now();

    // Connected, never a byte.
    let idle = TcpStream::connect(addr(&app)).await.unwrap();
    // Half a request head, then nothing (slowloris).
    let mut slow_head = TcpStream::connect(addr(&app)).await.unwrap();
    slow_head
        .write_all(b"POST /v1/devices/stall-1/reports HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A head trickled a byte at a time, each within the idle timeout: the head's own deadline
    // cuts it.
    let trickle = TcpStream::connect(addr(&app)).await.unwrap();
    let trickler = tokio::spawn(async move {
        let mut trickle = trickle;
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain([b'a'; 200].iter())
        {
            if trickle.write_all(&[*b]).await.is_err() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("a head trickled over 20 s was read to its end");
    });
    // An authenticated report whose body stops after 10 of 1000 bytes.
    let mut partial_body = TcpStream::connect(addr(&app)).await.unwrap();
    partial_body
        .write_all(
            format!(
                "POST /v1/devices/stall-1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"events\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // An authenticated report whose body trickles in, a byte within each idle timeout: the
    // body's own deadline cuts it.
    let mut trickle_body = TcpStream::connect(addr(&app)).await.unwrap();
    trickle_body
        .write_all(
            format!(
                "POST /v1/devices/stall-1/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let body_trickler = tokio::spawn(async move {
        let mut answer = Vec::new();
        for _ in 0..200 {
            if trickle_body.write_all(b" ").await.is_err() {
                break;
            }
            let mut buf = [0u8; 1024];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(100), trickle_body.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
            }
        }
        (String::from_utf8_lossy(&answer).to_string(), Instant::now())
    });
    // A finished request on a kept-alive connection, then silence.
    let mut keep_alive = TcpStream::connect(addr(&app)).await.unwrap();
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    let (sent, t) = until_closed(idle, started, close_within).await;
    assert!(sent.is_empty(), "{sent:?}");
    eprintln!("idle connection closed after {t:?}");
    let (_, t) = until_closed(slow_head, started, close_within).await;
    eprintln!("half a head: closed after {t:?}");
    let (sent, t) = until_closed(partial_body, started, close_within).await;
    let sent = String::from_utf8_lossy(&sent);
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    eprintln!(
        "partial body: closed after {t:?}: {}",
        sent.lines().next().unwrap_or("")
    );
    let (sent, t) = until_closed(keep_alive, started, close_within).await;
    assert!(
        String::from_utf8_lossy(&sent).starts_with("HTTP/1.1 200"),
        "the request itself was answered"
    );
    eprintln!("idle keep-alive: closed after {t:?}");
    let cut = tokio::time::timeout(Duration::from_secs(10), trickler)
        .await
        .expect("the trickled head was cut")
        .unwrap();
    eprintln!("trickled head: cut after {:?}", cut - started);
    let (answer, cut) = tokio::time::timeout(Duration::from_secs(10), body_trickler)
        .await
        .expect("the trickled body was cut")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    eprintln!("trickled body: 408 and closed after {:?}", cut - started);
    // The server still serves.
    let ok = app.client.get(app.at("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_strangers_body_is_never_read() {
    let app = app_with(ConnectionLimits::default()).await;
    device(&app, "dev-1").await;
    // Over the 256 KB limit, without a token and with a wrong one: 401, not 413.
    let body = vec![b' '; 300 * 1024];
    let resp = app
        .client
        .post(app.at("/v1/devices/dev-1/reports"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    let resp = app
        .client
        .post(app.at("/v1/devices/dev-1/check-in"))
        .bearer_auth("dev_wrong")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_connection_cap_holds_and_frees() {
    let app = app_with(ConnectionLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..LIMITS
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    // Let the server accept those four.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fifth = app.client.get(app.at("/healthz")).send();
    tokio::pin!(fifth);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut fifth)
            .await
            .is_err(),
        "a fifth connection was served while four were open"
    );
    drop(held.pop());
    let resp = tokio::time::timeout(Duration::from_secs(5), fifth)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(held);
    app.server.shutdown().await.unwrap();
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The attack from the adversarial pass, in rounds: 1,000 connections each send the head of a
/// 262 KB report and 250 KB of its body, then stall. Half carry no token, half a valid one (whose
/// bodies are read, at most `max_inflight_bodies` at a time, and time out). After each round,
/// once every connection is gone, the process's RSS must be back near where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_stalled_bodies() {
    let app = app_with(LIMITS).await;
    let token = device(&app, "victim").await;
    let body: std::sync::Arc<[u8]> = vec![b'x'; 250 * 1024].into();
    let baseline = rss_kib();
    let mut after = Vec::new();
    for _round in 0..4 {
        let mut tasks = Vec::new();
        for n in 0..1000 {
            let head = if n % 2 == 0 {
                "POST /v1/devices/victim/reports HTTP/1.1\r\nHost: x\r\n\
                 Content-Type: application/json\r\nContent-Length: 262144\r\n\r\n"
                    .to_string()
            } else {
                format!(
                    "POST /v1/devices/victim/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: 262144\r\n\r\n"
                )
            };
            let body = body.clone();
            let addr = addr(&app);
            tasks.push(tokio::spawn(async move {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    return;
                };
                let _ = s.write_all(head.as_bytes()).await;
                // The server may stop reading (and close) at any point: that is the point.
                let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(&body)).await;
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    let mut sink = [0u8; 1024];
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
            }));
        }
        let peak = rss_kib();
        for t in tasks {
            t.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        after.push(rss_kib());
        eprintln!(
            "round: RSS {} MB at start, {} MB mid-attack, {} MB after",
            baseline / 1024,
            peak / 1024,
            after.last().unwrap() / 1024
        );
    }
    // The first rounds grow the allocator's pools (1,000 connections' tasks and buffers, 16
    // bodies of 256 KB in flight, spread over the runtime's threads); later rounds reuse them:
    // nothing is kept per attack. Unbounded, one round of this attack buffers 250 MB of bodies
    // (the adversarial pass measured +90 to +290 MB per round).
    let warm = after[0].max(after[1]);
    for later in &after[2..] {
        assert!(
            later.saturating_sub(warm) < 12 * 1024,
            "RSS grows round over round: {baseline} KiB fresh, {after:?} KiB after each round"
        );
    }
    assert!(
        warm.saturating_sub(baseline) < 64 * 1024,
        "RSS {baseline} KiB fresh, {after:?} KiB after each round"
    );
    let ok = app.client.get(app.at("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    app.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn https_when_given_a_certificate() {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = tempfile::tempdir().unwrap();
    let (cert, key) = (pem.path().join("cert.pem"), pem.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::test_config(Db::Sqlite, dir.path()).await;
    config.tls = Some(fota_server::config::TlsFiles { cert, key });
    let app = testkit::spawn_with(Db::Sqlite, dir, config).await;
    assert!(app.url.starts_with("https://"), "{}", app.url);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = TcpStream::connect(addr(&app)).await.unwrap();
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::get(format!("http://{}/healthz", addr(&app))).await;
    assert!(plain.is_err(), "{plain:?}");
    app.server.shutdown().await.unwrap();
}
