//! The dashboard in a real browser: Debian's Chromium, headless, driven over WebDriver by its
//! ChromeDriver (both installed by scripts/setup), against a real server with a small fleet of
//! test devices over HTTP. Signing in, the fleet, a bad release halting while its page is open
//! (shown live, without a reload), abort and pause from the page with their confirmation, and a
//! viewer who sees no action button and whom the API refuses anyway.
//!
//! Without Chromium or ChromeDriver this test fails, saying what is missing: it is never skipped.
//! `FOTA_CHROMIUM` and `FOTA_CHROMEDRIVER` name other binaries; `FOTA_DASHBOARD_SCREENSHOTS=DIR`
//! saves the pages it visits as PNG files there (docs/dashboard-*.png were made so).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_server::domain::auth::Role;
use fota_testkit::{
    self as testkit, assert_error, backend_tests, fleet, release, rollout_status, spawn_app,
    Behaviour, Db,
};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

backend_tests!(dashboard_in_a_real_browser);

/// The page and its files come from the server itself, need nothing from elsewhere (an
/// air-gapped network has no CDN), and may run no one else's script.
#[tokio::test]
async fn the_page_is_served_whole_from_the_binary() {
    let app = spawn_app(Db::Sqlite).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let resp = app.client.get(app.at(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {headers:?}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
        let body = resp.text().await.unwrap();
        for outside in ["http://", "https://", "//cdn", "localStorage"] {
            assert!(!body.contains(outside), "{path} refers to {outside}");
        }
    }
    // The page asks who a token is: its name and role, and nothing for a stranger.
    let me: Value = app
        .get("/v1/whoami")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me, json!({"name": "test-admin", "role": "admin"}));
    let resp = app.client.get(app.at("/v1/whoami")).send().await.unwrap();
    assert_error(resp, 401, "unauthorized").await;
    let resp = app.get("/v1/rollouts/99/events").send().await.unwrap();
    assert_error(resp, 404, "rollout_not_found").await;
    app.server.shutdown().await.unwrap();
}

/// How long the page may take to show something before the test gives up (a liveness bound,
/// not a speed claim: speed is measured in docs/BENCHMARKS.md).
const PATIENCE: Duration = Duration::from_secs(20);

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_binary(env: &str, names: &[&str]) -> std::path::PathBuf {
    if let Ok(p) = std::env::var(env) {
        return p.into();
    }
    for name in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = std::path::Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{} not found (looked for {names:?} on PATH, or set {env}): run scripts/setup, which \
         installs Debian's chromium and chromium-driver",
        names.join(" or ")
    );
}

/// A headless Chromium behind its ChromeDriver, spoken to over WebDriver.
struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser too (ChromeDriver's child).
        let _ = std::process::Command::new("kill")
            .arg(self.driver.id().to_string())
            .status();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Self {
        let chromium = find_binary("FOTA_CHROMIUM", &["chromium", "chromium-browser"]);
        let chromedriver = find_binary("FOTA_CHROMEDRIVER", &["chromedriver"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{} did not come up",
                chromedriver.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.path().display())],
            }
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("ChromeDriver refused a session: {resp}"))
            .to_string();
        Self {
            driver,
            http,
            session: format!("{base}/session/{session}"),
            _profile: profile,
        }
    }

    /// End the session (and the browser).
    async fn quit(&self) {
        self.call(reqwest::Method::DELETE, "", Value::Null).await;
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp: Value = req.send().await.unwrap().json().await.unwrap();
        resp["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, body).await
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Run `script` (a function body) in the page; its return value.
    async fn js(&self, script: &str) -> Value {
        let v = self
            .post("/execute/sync", json!({ "script": script, "args": [] }))
            .await;
        assert!(
            !v.get("error").is_some_and(Value::is_string),
            "script failed: {v}\n{script}"
        );
        v
    }

    /// Wait until `expr` is truthy in the page; its value.
    async fn wait(&self, what: &str, expr: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self
                .post(
                    "/execute/sync",
                    json!({ "script": format!("try {{ return ({expr}); }} catch (e) {{ return null; }}"), "args": [] }),
                )
                .await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if started.elapsed() > PATIENCE {
                let page = self.js("return document.body.innerText").await;
                panic!("waited {PATIENCE:?} for {what} ({expr}); the page shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.js(&format!(
            "const e = document.querySelector({css:?}); return e ? e.textContent.trim() : null"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    async fn element(&self, css: &str) -> Option<String> {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// Click `css` as a person would (the element is re-found if the page redrew it).
    async fn click(&self, css: &str) {
        let started = Instant::now();
        loop {
            if let Some(id) = self.element(css).await {
                let v = self.post(&format!("/element/{id}/click"), json!({})).await;
                if v.is_null() {
                    return;
                }
            }
            assert!(started.elapsed() < PATIENCE, "cannot click {css}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self
            .element(css)
            .await
            .unwrap_or_else(|| panic!("no {css}"));
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    async fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("FOTA_DASHBOARD_SCREENSHOTS") else {
            return;
        };
        let png = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let bytes = base64_decode(png.as_str().unwrap());
        std::fs::write(
            std::path::Path::new(&dir).join(format!("dashboard-{name}.png")),
            bytes,
        )
        .unwrap();
    }

    /// Sign in through the form.
    async fn sign_in(&self, token: &str) {
        self.wait(
            "the sign-in form",
            "!document.querySelector('#sign-in').hidden",
        )
        .await;
        self.type_into("#token", token).await;
        self.click("#sign-in-button").await;
        self.wait("signed in", "!document.querySelector('#who').hidden")
            .await;
    }

    /// Click an action button, check its confirmation says what it does, confirm.
    async fn act(&self, action: &str, says: &str) {
        self.click(&format!("#action-{action}")).await;
        self.wait(
            "the confirmation",
            "document.querySelector('#confirm').open",
        )
        .await;
        let text = self.text("#confirm-text").await;
        assert!(text.contains(says), "{action}'s confirmation says: {text}");
        self.click("#confirm-ok").await;
    }
}

/// Standard base64 (WebDriver's screenshots).
fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

async fn dashboard_in_a_real_browser(db: Db) {
    let app = spawn_app(db).await;
    let store = &app.server.state.store;
    let operator = testkit::token(store, "olga", Role::Operator).await;
    let viewer = testkit::token(store, "vic", Role::Viewer).await;
    let mut devices = fleet(&app, "lamp", 10, "streetlight", "1.0.0").await;
    let bad = release(&app, "streetlight", "1.1.0", 1).await;
    let good = release(&app, "streetlight", "1.2.0", 1).await;

    let browser = Browser::start().await;
    browser.goto(&app.at("/")).await;

    // Sign in as an operator; the fleet is the first page.
    browser.sign_in(&operator).await;
    browser
        .wait(
            "ten devices listed",
            "document.querySelectorAll('#devices tbody tr').length === 10",
        )
        .await;
    assert_eq!(browser.text("#fleet-total").await, "10");
    assert!(browser.text("#fleet-versions").await.contains("1.0.0: 10"));
    browser.screenshot("fleet").await;
    // Filters and the search go through the admin API's filters.
    browser.type_into("#filter-q", "lamp-0003").await;
    browser.click("#fleet-filters button[type=submit]").await;
    browser
        .wait(
            "the search to narrow the list",
            "document.querySelectorAll('#devices tbody tr').length === 1 && document.querySelector('#devices tbody tr').dataset.device === 'lamp-0003'",
        )
        .await;
    browser.click("#devices a").await;
    browser
        .wait(
            "the device page with its check-in facts",
            "document.body.innerText.includes('Bootloader') && document.body.innerText.includes('lamp-0003')",
        )
        .await;

    // A bad release: two canaries, the default gate (5%): the first rollback halts it.
    let r1 = testkit::start_rollout(
        &app,
        json!({"release_id": bad, "stages": [{"devices": 2, "bake_s": 0}, {"percent": 100}]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    browser.click("#nav a[data-page=rollouts]").await;
    browser
        .wait(
            "the rollout listed",
            &format!("document.querySelector('#rollouts tr[data-rollout=\"{r1}\"]')"),
        )
        .await;
    browser
        .click(&format!("#rollouts tr[data-rollout=\"{r1}\"] a"))
        .await;
    browser
        .wait("the live stream", "document.querySelector('#live.on')")
        .await;
    assert_eq!(browser.text("#rollout-state").await, "active");
    assert!(browser.element("#halt").await.is_none());
    // Marks this page: a reload would lose it.
    browser.js("window.fotaNoReload = 1; return 1").await;

    let mut halted_at = None;
    for d in &mut devices {
        if let Some(offer) = d.check_in(&app).await {
            d.take(&app, &offer, Behaviour::RollsBack).await;
            halted_at = Some(Instant::now());
            break;
        }
    }
    let halted_at = halted_at.expect("a canary was offered the release");
    let api = rollout_status(&app, r1).await;
    assert_eq!(api["state"], "halted", "{api}");
    browser
        .wait(
            "the halt on the open page",
            "document.querySelector('#rollout-state').textContent === 'halted' && document.querySelector('#halt-reason')",
        )
        .await;
    println!(
        "halt shown on the open page {:?} after the report that crossed the gate",
        halted_at.elapsed()
    );
    assert_eq!(
        browser.text("#halt-reason").await,
        api["halt_message"].as_str().unwrap()
    );
    assert_eq!(browser.js("return window.fotaNoReload").await, json!(1));
    assert!(!browser
        .text("#rollout")
        .await
        .split_whitespace()
        .any(|w| w == "null" || w == "undefined"));
    assert_eq!(
        browser
            .text("#stages tr[data-stage=\"1\"] td[data-count=rolled_back]")
            .await,
        "1"
    );
    browser.screenshot("rollout-halted").await;

    // Abort it from the page, through its confirmation.
    browser.act("abort", &format!("Abort rollout #{r1}")).await;
    browser
        .wait(
            "the abort",
            "document.querySelector('#rollout-state').textContent === 'aborted'",
        )
        .await;
    assert_eq!(rollout_status(&app, r1).await["state"], "aborted");
    assert!(browser.element("#actions").await.is_none());

    // A good release, stage 1 of three devices baking an hour: confirmations rise on the page.
    let r2 = testkit::start_rollout(
        &app,
        json!({"release_id": good, "stages": [{"devices": 3, "bake_s": 3600}, {"percent": 100}]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    browser.goto(&app.at(&format!("/#/rollouts/{r2}"))).await;
    browser
        .wait("the live stream", "document.querySelector('#live.on')")
        .await;
    assert_eq!(browser.text("#total-confirmed").await, "0");
    browser.js("window.fotaNoReload = 2; return 1").await;
    let mut confirmed = 0;
    for d in &mut devices {
        if let Some(offer) = d.check_in(&app).await {
            d.take(&app, &offer, Behaviour::Good).await;
            confirmed += 1;
            browser
                .wait(
                    "one more confirmation on the page",
                    &format!(
                        "document.querySelector('#total-confirmed').textContent === '{confirmed}'"
                    ),
                )
                .await;
        }
    }
    assert_eq!(confirmed, 3, "stage 1 reaches three devices");
    assert_eq!(browser.js("return window.fotaNoReload").await, json!(2));
    browser.screenshot("rollout-live").await;

    // Pause from the page.
    browser.act("pause", "Nothing more is offered").await;
    browser
        .wait(
            "the pause",
            "document.querySelector('#rollout-state').textContent === 'paused'",
        )
        .await;
    assert_eq!(rollout_status(&app, r2).await["state"], "paused");

    // The audit log names the operator for both actions.
    browser.click("#nav a[data-page=audit]").await;
    browser
        .wait(
            "the audit log",
            "document.querySelector('#audit tr[data-action=\"rollout.pause\"]') && document.querySelector('#audit tr[data-action=\"rollout.abort\"]')",
        )
        .await;
    assert!(browser
        .text("#audit tr[data-action=\"rollout.abort\"]")
        .await
        .contains("olga"));

    // The token never lands in the address.
    assert!(!browser.url().await.contains(&operator));

    // A viewer: the same page without a single action button; the API refuses them anyway.
    browser.click("#sign-out").await;
    assert_eq!(
        browser
            .js("return sessionStorage.getItem('fota.token')")
            .await,
        Value::Null
    );
    browser.sign_in(&viewer).await;
    assert_eq!(browser.text("#who-role").await, "viewer");
    browser.goto(&app.at(&format!("/#/rollouts/{r2}"))).await;
    browser
        .wait(
            "the rollout page",
            "document.querySelector('#rollout-state') && document.querySelector('#live.on')",
        )
        .await;
    assert_eq!(browser.text("#rollout-state").await, "paused");
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#actions, [id^=action-]:not(#action-error)').length")
            .await,
        json!(0)
    );
    let refused = browser
        .wait(
            "the API's answer to the viewer",
            &format!(
                "window.fotaRefused || (fetch('/v1/rollouts/{r2}/resume', {{method: 'POST', headers: {{Authorization: 'Bearer ' + sessionStorage.getItem('fota.token')}}}}).then(r => r.json().then(j => {{ window.fotaRefused = r.status + ' ' + j.error; }})), null)"
            ),
        )
        .await;
    assert_eq!(refused, json!("403 forbidden"));
    let resp = app
        .client
        .post(app.at(&format!("/v1/rollouts/{r2}/resume")))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "forbidden").await;
    assert_eq!(rollout_status(&app, r2).await["state"], "paused");

    // The event stream needs a token too.
    let resp = app
        .client
        .get(app.at(&format!("/v1/rollouts/{r2}/events")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    browser.quit().await;
    app.server.shutdown().await.unwrap();
}
