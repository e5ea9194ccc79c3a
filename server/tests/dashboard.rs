//! The dashboard in a real browser: Debian's Chromium, headless, driven over WebDriver by its
//! ChromeDriver (both installed by scripts/setup), against a real server with a small fleet of
//! test devices over HTTP. One operator's session: sign in, the fleet and the server's device
//! search, a refused release upload (its reason in words) and a good one with its digests,
//! a rollout started from the plan form (the CLI's validation and words) with confirmations
//! rising live in the figures and the chart, approve / pause / resume, a fleet rollback from
//! the page, a refused start, a bad release halting while its page is open (shown live, without
//! a reload), the page at 390 px, abort, the audit log; then a viewer who sees no action and
//! whom the API refuses anyway. Every visible control has an accessible name, as Chromium
//! computes it.
//!
//! Without Chromium or ChromeDriver this test fails, saying what is missing: it is never skipped.
//! `FOTA_CHROMIUM` and `FOTA_CHROMEDRIVER` name other binaries; `FOTA_DASHBOARD_SCREENSHOTS=DIR`
//! saves the pages it visits as PNG files there (docs/dashboard-*.png were made so).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_protocol::SlotId;
use fota_server::domain::auth::Role;
use fota_testkit::{
    self as testkit, assert_error, backend_tests, fleet, release, rollout_status, spawn_app,
    Behaviour, Db,
};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

backend_tests!(dashboard_in_a_real_browser, search_and_timeline);

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
        // The chart's SVG elements name their XML namespace, a URI that is never fetched.
        let body = resp
            .text()
            .await
            .unwrap()
            .replace("http://www.w3.org/2000/svg", "");
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

/// The two reads the dashboard added to the API: a device search done by the server (so the
/// page never downloads the fleet to filter it) and a rollout's confirmations and failures over
/// time (the chart), on both backends.
async fn search_and_timeline(db: Db) {
    let app = spawn_app(db).await;
    let mut lamps = fleet(&app, "lamp", 12, "streetlight", "1.0.0").await;
    fleet(&app, "pole_x", 2, "streetlight", "1.0.0").await;
    fleet(&app, "polexx", 2, "streetlight", "1.0.0").await;
    let ids = |v: &Value| -> Vec<String> {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    let search = |q: &str| app.get(&format!("/v1/devices?{q}"));
    let found: Value = search("q=0001").send().await.unwrap().json().await.unwrap();
    assert_eq!(ids(&found), ["lamp-0001", "pole_x-0001", "polexx-0001"]);
    // Case does not matter; LIKE's wildcards are plain characters.
    let found: Value = search("q=LAMP-001")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&found), ["lamp-0010", "lamp-0011"]);
    let found: Value = search("q=e_x").send().await.unwrap().json().await.unwrap();
    assert_eq!(ids(&found), ["pole_x-0000", "pole_x-0001"]);
    // With the other filters and a page at a time.
    let page: Value = search("q=lamp&limit=5&after=lamp-0004")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ids(&page),
        [
            "lamp-0005",
            "lamp-0006",
            "lamp-0007",
            "lamp-0008",
            "lamp-0009"
        ]
    );
    assert_eq!(page["next_after"], "lamp-0009");
    let none: Value = search("q=nothing&version=1.0.0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&none), Vec::<String>::new());
    for bad in ["q=%25", "q=", "q=a%20b", &format!("q={}", "x".repeat(65))] {
        let resp = search(bad).send().await.unwrap();
        assert_error(resp, 400, "invalid_query").await;
    }

    // The timeline: cumulative, from the start to now, ending at the rollout's totals.
    let r = release(&app, "streetlight", "1.1.0", 1).await;
    let id = testkit::start_rollout(
        &app,
        json!({"release_id": r, "selector": {"tags": []}, "stages": [{"devices": 3, "bake_s": 3600, "max_failure_rate": 1.0}, {"percent": 100}]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let timeline = || async {
        app.get(&format!("/v1/rollouts/{id}/timeline"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let t = timeline().await;
    let points = t["points"].as_array().unwrap();
    assert!(points.len() >= 2 && points.len() <= 61, "{t}");
    assert!(points
        .iter()
        .all(|p| p["confirmed"] == 0 && p["failures"] == 0));
    let mut outcomes = vec![Behaviour::Good, Behaviour::Good, Behaviour::RollsBack].into_iter();
    for d in &mut lamps {
        if let Some(offer) = d.check_in(&app).await {
            d.take(&app, &offer, outcomes.next().unwrap()).await;
        }
    }
    assert!(outcomes.next().is_none(), "three canaries took the offer");
    let status = testkit::wait_for(&app, id, PATIENCE, |s| {
        s["counts"]["confirmed"] == 2 && s["counts"]["rolled_back"] == 1
    })
    .await;
    let t = timeline().await;
    let points = t["points"].as_array().unwrap();
    assert_eq!(t["rollout_id"], id);
    assert_eq!(t["from"], status["created_at"]);
    assert_eq!(points[0]["at"], t["from"]);
    assert_eq!(points.last().unwrap()["at"], t["to"]);
    assert_eq!(points.last().unwrap()["confirmed"], 2, "{t}");
    assert_eq!(points.last().unwrap()["failures"], 1, "{t}");
    for pair in points.windows(2) {
        assert!(pair[0]["at"].as_i64() < pair[1]["at"].as_i64(), "{t}");
        assert!(pair[0]["confirmed"].as_i64() <= pair[1]["confirmed"].as_i64());
        assert!(pair[0]["failures"].as_i64() <= pair[1]["failures"].as_i64());
    }
    let resp = app.get("/v1/rollouts/999/timeline").send().await.unwrap();
    assert_error(resp, 404, "rollout_not_found").await;
    let resp = app
        .client
        .get(app.at(&format!("/v1/rollouts/{id}/timeline")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
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

    /// Empty an input.
    async fn clear(&self, css: &str) {
        let id = self
            .element(css)
            .await
            .unwrap_or_else(|| panic!("no {css}"));
        self.post(&format!("/element/{id}/clear"), json!({})).await;
    }

    /// Replace an input's text.
    async fn retype(&self, css: &str, text: &str) {
        self.clear(css).await;
        self.type_into(css, text).await;
    }

    /// Choose `value` in a select, as a person's choice does (its change event fires).
    async fn choose(&self, css: &str, value: &str) {
        self.js(&format!(
            "const s = document.querySelector({css:?}); s.value = {value:?}; s.dispatchEvent(new Event('change')); return s.value"
        ))
        .await;
        assert_eq!(
            self.js(&format!("return document.querySelector({css:?}).value"))
                .await,
            json!(value),
            "{css} has no option {value}"
        );
    }

    /// Resize the window (a phone is 390 px wide).
    async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    /// Every visible control of the page has an accessible name, as Chromium's accessibility
    /// tree computes it (WebDriver's computed label), not as this test guesses it.
    async fn assert_named_controls(&self, page: &str) {
        let n = self
            .js("let i = 0; for (const el of document.querySelectorAll('button, a[href], input, select, textarea, [role=meter], svg[role=img]')) { el.removeAttribute('data-a11y'); if (el.getClientRects().length > 0) el.setAttribute('data-a11y', i++); } return i;")
            .await
            .as_u64()
            .unwrap();
        assert!(n > 0, "{page}: no control found");
        for i in 0..n {
            let css = format!("[data-a11y=\"{i}\"]");
            let id = self.element(&css).await.unwrap();
            let label = self
                .call(
                    reqwest::Method::GET,
                    &format!("/element/{id}/computedlabel"),
                    Value::Null,
                )
                .await;
            let html = self
                .js(&format!(
                    "return document.querySelector({css:?}).outerHTML.slice(0, 200)"
                ))
                .await;
            assert!(
                label.as_str().is_some_and(|l| !l.trim().is_empty()),
                "{page}: a control has no accessible name ({label}): {html}"
            );
        }
    }

    /// The page is no wider than the window: nothing to scroll sideways but the tables' own
    /// boxes.
    async fn assert_fits(&self, page: &str) {
        let sizes = self
            .js("return [document.documentElement.scrollWidth, window.innerWidth]")
            .await;
        assert!(
            sizes[0].as_u64() <= sizes[1].as_u64(),
            "{page} is wider than the window (scroll width, window width): {sizes}"
        );
    }

    /// A screenshot of the page's first 1,400 px (the window made taller for it).
    async fn screenshot_tall(&self, name: &str) {
        if std::env::var("FOTA_DASHBOARD_SCREENSHOTS").is_err() {
            return;
        }
        self.resize(1280, 1400).await;
        self.js("window.scrollTo(0, 0); return 1").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.screenshot(name).await;
        self.resize(1280, 900).await;
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
        self.act_on(&format!("#action-{action}"), says).await;
    }

    /// Click `css`, check the confirmation it opens says `says`, confirm.
    async fn act_on(&self, css: &str, says: &str) {
        self.click(css).await;
        self.wait(
            "the confirmation",
            "document.querySelector('#confirm').open",
        )
        .await;
        let text = self.text("#confirm-text").await;
        assert!(text.contains(says), "{css}'s confirmation says: {text}");
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

/// Wait for the page at `hash` (after a form sent the browser there): its rollout id.
async fn rollout_opened(browser: &Browser) -> i64 {
    let hash = browser
        .wait(
            "the new rollout's page",
            "/^#\\/rollouts\\/\\d+$/.test(location.hash) && document.querySelector('#live.on') && location.hash",
        )
        .await;
    hash.as_str().unwrap()["#/rollouts/".len()..]
        .parse()
        .unwrap()
}

async fn dashboard_in_a_real_browser(db: Db) {
    let app = spawn_app(db).await;
    let store = &app.server.state.store;
    let operator = testkit::token(store, "olga", Role::Operator).await;
    let viewer = testkit::token(store, "vic", Role::Viewer).await;
    let mut devices = fleet(&app, "lamp", 10, "streetlight", "1.0.0").await;
    let base = release(&app, "streetlight", "1.0.0", 1).await;
    let bad = release(&app, "streetlight", "1.1.0", 1).await;
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: Vec<u8>| {
        let path = files.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let key = testkit::signing_key();
    let stranger = testkit::other_key();
    let good_a = file("good-a.bin", testkit::image(SlotId::A, "1.2.0", 1, &key));
    let good_b = file("good-b.bin", testkit::image(SlotId::B, "1.2.0", 1, &key));
    let strange_a = file(
        "strange-a.bin",
        testkit::image(SlotId::A, "1.2.0", 1, &stranger),
    );
    let strange_b = file(
        "strange-b.bin",
        testkit::image(SlotId::B, "1.2.0", 1, &stranger),
    );

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
    browser.assert_named_controls("the fleet").await;
    browser.screenshot("fleet").await;
    // The search is the server's: the page asks for the matches (q=...), not the whole fleet.
    browser.type_into("#filter-q", "LAMP-0003").await;
    browser.click("#fleet-filters button[type=submit]").await;
    browser
        .wait(
            "the search to narrow the list",
            "document.querySelectorAll('#devices tbody tr').length === 1 && document.querySelector('#devices tbody tr').dataset.device === 'lamp-0003'",
        )
        .await;
    assert_eq!(
        browser
            .js("return performance.getEntriesByType('resource').some(e => e.name.includes('/v1/devices?q=LAMP-0003&'))")
            .await,
        json!(true),
        "the search went to the server"
    );
    browser.click("#devices a").await;
    browser
        .wait(
            "the device page with its check-in facts",
            "document.body.innerText.includes('Bootloader') && document.body.innerText.includes('lamp-0003')",
        )
        .await;

    // Releases: a refused upload says why; two signed images upload, and the release's page
    // shows both slots' digests and key hash.
    browser.click("#nav a[data-page=releases]").await;
    browser
        .wait(
            "the releases",
            "document.querySelectorAll('#releases tbody tr').length === 2",
        )
        .await;
    browser.click("#upload-submit").await;
    browser
        .wait(
            "the form's own refusal",
            "document.querySelector('#upload-model-error').textContent.includes('give the model')",
        )
        .await;
    assert!(!browser
        .js("return document.querySelector('#confirm').open")
        .await
        .as_bool()
        .unwrap());
    browser.type_into("#upload-model", "streetlight").await;
    browser.type_into("#upload-image-a", &strange_a).await;
    browser.type_into("#upload-image-b", &strange_b).await;
    browser
        .act_on("#upload-submit", "strange-a.bin (slot A")
        .await;
    let refusal = browser
        .wait(
            "the server's refusal",
            "document.querySelector('#upload-error').textContent",
        )
        .await;
    let refusal = refusal.as_str().unwrap();
    assert!(
        refusal.contains("signed with a key this server does not trust")
            && refusal.contains("(untrusted_key)"),
        "{refusal}"
    );
    browser
        .js("document.querySelector('#upload-error').scrollIntoView({block: 'center'}); return 1")
        .await;
    browser.screenshot("release-refused").await;
    browser.goto(&app.at("/#/releases?again")).await;
    browser
        .wait("a fresh form", "document.querySelector('#upload-model')")
        .await;
    browser.type_into("#upload-model", "streetlight").await;
    browser.type_into("#upload-image-a", &good_a).await;
    browser.type_into("#upload-image-b", &good_b).await;
    browser
        .type_into("#upload-notes", "fixes the lamp flicker")
        .await;
    browser
        .act_on("#upload-submit", "Upload a release of streetlight")
        .await;
    let hash = browser
        .wait(
            "the new release's page",
            "/^#\\/releases\\/\\d+$/.test(location.hash) && document.querySelector('#release-images') && location.hash",
        )
        .await;
    let good: i64 = hash.as_str().unwrap()["#/releases/".len()..]
        .parse()
        .unwrap();
    let record: Value = app
        .get(&format!("/v1/releases/{good}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["version"], "1.2.0");
    assert_eq!(record["created_by"], "olga");
    assert_eq!(browser.text("#release-version").await, "1.2.0");
    assert_eq!(browser.text("#release-counter").await, "1");
    for (i, slot) in ["a", "b"].iter().enumerate() {
        let row = format!("#release-images tr[data-slot={slot}]");
        assert_eq!(
            browser.text(&format!("{row} [data-sha256]")).await,
            record["images"][i]["sha256"].as_str().unwrap()
        );
        assert_eq!(
            browser.text(&format!("{row} [data-key-hash]")).await,
            record["images"][i]["key_hash"].as_str().unwrap()
        );
    }
    browser.assert_named_controls("a release").await;
    browser.screenshot("release").await;

    // Start a rollout of it from the page: the form refuses what the CLI refuses, then the
    // confirmation says what will happen.
    browser.click("#release-start").await;
    browser
        .wait("the plan form", "document.querySelector('#start-form')")
        .await;
    assert_eq!(
        browser
            .js("return document.querySelector('#start-release').value")
            .await,
        json!(good.to_string())
    );
    browser.assert_named_controls("the plan form").await;
    browser.type_into("#start-max-failure-rate", "5").await;
    browser.type_into("#start-bake", "1.5h").await;
    browser.click("#start-submit").await;
    browser
        .wait(
            "the CLI's words for a bad rate",
            "document.querySelector('#start-max-failure-rate-error').textContent === \"'5' is above 1; for a percentage write 5%\"",
        )
        .await;
    assert_eq!(
        browser.text("#start-bake-error").await,
        "'1.5h' is not a duration (e.g. 90, 90s, 30m, 2h, 1d)"
    );
    browser.screenshot("start-form").await;
    // A plan of three canaries baking an hour, approved by hand.
    browser.click("#start-kind-devices").await;
    browser.type_into("#start-stages", "3,10").await;
    browser.retype("#start-bake", "1h").await;
    browser.retype("#start-max-failure-rate", "50%").await;
    browser.click("#start-manual").await;
    browser
        .act_on(
            "#start-submit",
            "3 devices → 10 devices; each stage bakes 1 h, needs 20 decided devices",
        )
        .await;
    let r_good = rollout_opened(&browser).await;
    let api = rollout_status(&app, r_good).await;
    assert_eq!(api["created_by"], "olga");
    assert_eq!(api["stages"][0]["devices"], 3);
    assert_eq!(api["stages"][0]["bake_s"], 3600);
    assert_eq!(api["stages"][0]["max_failure_rate"], 0.5);
    assert_eq!(api["stages"][0]["auto_advance"], false);
    assert_eq!(api["stages"][0]["min_sample"], 20, "the server's default");
    assert_eq!(browser.text("#total-confirmed").await, "0");
    browser.js("window.fotaNoReload = 1; return 1").await;
    // Chromium's own measure of layout shift (the Layout Instability API), while numbers move.
    assert_eq!(
        browser
            .js("return PerformanceObserver.supportedEntryTypes.includes('layout-shift')")
            .await,
        json!(true)
    );
    browser
        .js("window.fotaShift = 0; new PerformanceObserver(l => { for (const e of l.getEntries()) if (!e.hadRecentInput) window.fotaShift += e.value; }).observe({type: 'layout-shift'}); return 1")
        .await;
    // And directly: what follows the numbers (the chart) stays where it is.
    let chart_at =
        "return document.querySelector('#chart').getBoundingClientRect().top + window.scrollY";
    let chart_top = browser.js(chart_at).await;

    // Confirmations rise on the open page, in the figures and the chart.
    let mut confirmed = 0;
    for d in &mut devices {
        if let Some(offer) = d.check_in(&app).await {
            d.take(&app, &offer, Behaviour::Good).await;
            confirmed += 1;
            browser
                .wait(
                    "one more confirmation on the page",
                    &format!(
                        "document.querySelector('#total-confirmed').textContent === '{confirmed}' && document.querySelector('#chart').dataset.confirmed === '{confirmed}'"
                    ),
                )
                .await;
            assert_eq!(
                browser.js(chart_at).await,
                chart_top,
                "the chart moved when the numbers changed"
            );
        }
    }
    assert_eq!(confirmed, 3, "stage 1 reaches three devices");
    assert_eq!(browser.js("return window.fotaNoReload").await, json!(1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shift = browser.js("return window.fotaShift").await;
    println!("layout shift while confirmations rose: {shift}");
    assert!(
        shift.as_f64().unwrap() < 0.001,
        "the page moved while its numbers changed: layout shift {shift}"
    );
    browser.assert_named_controls("a rollout").await;
    browser.screenshot_tall("rollout-live").await;

    // Approve, pause, resume, from the page, each through its confirmation.
    browser.act("approve", "may advance to the next one").await;
    browser
        .wait(
            "the approval",
            "document.querySelector('#gate-approval').textContent === 'approved'",
        )
        .await;
    assert_eq!(rollout_status(&app, r_good).await["approved"], true);
    browser.act("pause", "Nothing more is offered").await;
    browser
        .wait(
            "the pause",
            "document.querySelector('#rollout-state').textContent === 'paused'",
        )
        .await;
    assert_eq!(rollout_status(&app, r_good).await["state"], "paused");
    browser.act("resume", "Offers start again").await;
    browser
        .wait(
            "the resume",
            "document.querySelector('#rollout-state').textContent === 'active'",
        )
        .await;
    assert_eq!(rollout_status(&app, r_good).await["state"], "active");
    // The page's own audit log shows each action, by whom.
    browser
        .wait(
            "the rollout's audit log",
            "['rollout.create', 'rollout.approve', 'rollout.pause', 'rollout.resume'].every(a => document.querySelector('#rollout-audit-log tr[data-action=\"' + a + '\"]'))",
        )
        .await;
    assert!(browser
        .text("#rollout-audit-log tr[data-action=\"rollout.pause\"]")
        .await
        .contains("olga"));

    // Fleet rollback from the page: the three devices on 1.2.0 go back to 1.0.0, at once.
    browser.click("#action-rollback-link").await;
    browser
        .wait(
            "the rollback form",
            "document.querySelector('#rollback-form')",
        )
        .await;
    browser.choose("#rollback-release", &base.to_string()).await;
    assert_eq!(
        browser
            .js("return document.querySelector('#rollback-from').value")
            .await,
        json!(good.to_string()),
        "the rollback starts from the rollout's release"
    );
    browser
        .act_on(
            "#rollback-submit",
            "to every device running 1.2.0 (release #",
        )
        .await;
    assert!(browser
        .text("#confirm-text")
        .await
        .contains("all at once, with no health gate"));
    let r_back = rollout_opened(&browser).await;
    let api = rollout_status(&app, r_back).await;
    assert_eq!(api["kind"], "rollback");
    assert_eq!(api["targets"], 3);
    assert_eq!(rollout_status(&app, r_good).await["state"], "aborted");
    for d in &mut devices {
        if let Some(offer) = d.check_in(&app).await {
            assert_eq!(offer["rollout_id"], r_back);
            d.take(&app, &offer, Behaviour::Good).await;
        }
    }
    browser
        .wait(
            "the rollback to complete on the page",
            "document.querySelector('#rollout-state').textContent === 'completed' && document.querySelector('#chart').dataset.confirmed === '3'",
        )
        .await;

    // The server's refusal of a plan is shown in words: no device carries that tag.
    browser
        .goto(&app.at(&format!("/#/rollouts/new?release={bad}")))
        .await;
    browser
        .wait("the plan form", "document.querySelector('#start-form')")
        .await;
    browser.type_into("#start-tags", "nowhere").await;
    browser.act_on("#start-submit", "tagged nowhere").await;
    let refusal = browser
        .wait(
            "the server's refusal",
            "document.querySelector('#start-error').textContent",
        )
        .await;
    assert!(
        refusal.as_str().unwrap().contains("No device matches")
            && refusal.as_str().unwrap().contains("(no_targets)"),
        "{refusal}"
    );

    // A bad release, started from the page: two canaries, the default gate (5%): the first
    // rollback halts it, and the open page shows the halt and its reason without a reload.
    browser.clear("#start-tags").await;
    browser.click("#start-kind-devices").await;
    browser.type_into("#start-stages", "2,10").await;
    browser.type_into("#start-bake", "0").await;
    browser
        .act_on("#start-submit", "2 devices → 10 devices")
        .await;
    let r_bad = rollout_opened(&browser).await;
    assert_eq!(browser.text("#rollout-state").await, "active");
    assert!(browser.element("#halt").await.is_none());
    browser.js("window.fotaNoReload = 2; return 1").await;
    let mut halted_at = None;
    for d in &mut devices {
        if let Some(offer) = d.check_in(&app).await {
            d.take(&app, &offer, Behaviour::RollsBack).await;
            halted_at = Some(Instant::now());
            break;
        }
    }
    let halted_at = halted_at.expect("a canary was offered the release");
    let api = rollout_status(&app, r_bad).await;
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
    assert_eq!(browser.js("return window.fotaNoReload").await, json!(2));
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
    browser
        .wait(
            "the failure in the chart and the halt in the audit log",
            "document.querySelector('#chart').dataset.failures === '1' && document.querySelector('#rollout-audit-log tr[data-action=\"rollout.halt\"]')",
        )
        .await;
    browser.screenshot_tall("rollout-halted").await;

    // On a phone: the same page, nothing wider than the screen.
    browser.resize(390, 844).await;
    browser
        .wait("the narrow window", "window.innerWidth <= 400")
        .await;
    browser.assert_fits("the halted rollout on a phone").await;
    browser.screenshot("phone-rollout").await;
    browser.click("#nav a[data-page=fleet]").await;
    browser
        .wait(
            "the fleet",
            "document.querySelectorAll('#devices tbody tr').length === 10",
        )
        .await;
    browser.assert_fits("the fleet on a phone").await;
    browser.resize(1280, 900).await;
    browser.goto(&app.at(&format!("/#/rollouts/{r_bad}"))).await;
    browser
        .wait("the live stream", "document.querySelector('#live.on')")
        .await;

    // Abort it from the page, through its confirmation.
    browser
        .act("abort", &format!("Abort rollout #{r_bad}"))
        .await;
    browser
        .wait(
            "the abort",
            "document.querySelector('#rollout-state').textContent === 'aborted'",
        )
        .await;
    assert_eq!(rollout_status(&app, r_bad).await["state"], "aborted");
    // Nothing is left to steer; a fleet rollback is still offered.
    assert!(browser
        .element("#action-pause, #action-resume, #action-approve, #action-abort")
        .await
        .is_none());
    assert!(browser.element("#action-rollback-link").await.is_some());

    // The audit log names the operator for every action.
    browser.click("#nav a[data-page=audit]").await;
    browser
        .wait(
            "the audit log",
            "['release.upload', 'rollout.create', 'rollback.create', 'rollout.approve', 'rollout.pause', 'rollout.resume', 'rollout.abort', 'rollout.halt'].every(a => document.querySelector('#audit tr[data-action=\"' + a + '\"]'))",
        )
        .await;
    assert!(browser
        .text("#audit tr[data-action=\"rollout.abort\"]")
        .await
        .contains("olga"));

    // The token never lands in the address.
    assert!(!browser.url().await.contains(&operator));

    // A viewer: the same pages without a single action; the API refuses them anyway.
    browser.click("#sign-out").await;
    assert_eq!(
        browser
            .js("return sessionStorage.getItem('fota.token')")
            .await,
        Value::Null
    );
    browser.sign_in(&viewer).await;
    assert_eq!(browser.text("#who-role").await, "viewer");
    browser
        .goto(&app.at(&format!("/#/rollouts/{r_good}")))
        .await;
    browser
        .wait(
            "the rollout page",
            "document.querySelector('#rollout-state') && document.querySelector('#live.on')",
        )
        .await;
    assert_eq!(browser.text("#rollout-state").await, "aborted");
    let no_actions = "return document.querySelectorAll('#actions, [id^=action-]:not(#action-error), #start-rollout, #start-rollback, #upload-form, #release-start, #release-rollback, #start-form, #rollback-form').length";
    assert_eq!(browser.js(no_actions).await, json!(0));
    browser.click("#nav a[data-page=rollouts]").await;
    browser
        .wait("the rollouts", "document.querySelector('#rollouts')")
        .await;
    assert_eq!(browser.js(no_actions).await, json!(0));
    browser.click("#nav a[data-page=releases]").await;
    browser
        .wait("the releases", "document.querySelector('#releases')")
        .await;
    assert_eq!(browser.js(no_actions).await, json!(0));
    browser.goto(&app.at(&format!("/#/releases/{good}"))).await;
    browser
        .wait("the release", "document.querySelector('#release-images')")
        .await;
    assert_eq!(browser.js(no_actions).await, json!(0));
    browser.goto(&app.at("/#/rollouts/new")).await;
    browser
        .wait(
            "the role's refusal",
            "document.body.innerText.includes('needs the operator role')",
        )
        .await;
    assert_eq!(browser.js(no_actions).await, json!(0));
    // The API refuses what the page does not offer, called from the page with the viewer's
    // token and from outside.
    let refused = browser
        .wait(
            "the API's answers to the viewer",
            &format!(
                "window.fotaRefused || (Promise.all([['/v1/rollouts/{r_bad}/resume', null], ['/v1/rollouts', JSON.stringify({{release_id: {good}}})], ['/v1/rollbacks', JSON.stringify({{release_id: {base}}})]].map(([p, b]) => fetch(p, {{method: 'POST', body: b, headers: {{'Content-Type': 'application/json', Authorization: 'Bearer ' + sessionStorage.getItem('fota.token')}}}}).then(r => r.json().then(j => r.status + ' ' + j.error))))
                   .then(all => {{ window.fotaRefused = all.join(', '); }}), null)"
            ),
        )
        .await;
    assert_eq!(
        refused,
        json!("403 forbidden, 403 forbidden, 403 forbidden")
    );
    let resp = app
        .client
        .post(app.at(&format!("/v1/rollouts/{r_bad}/resume")))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "forbidden").await;
    let form = reqwest::multipart::Form::new()
        .text("model", "streetlight")
        .part(
            "image_a",
            reqwest::multipart::Part::bytes(testkit::image(SlotId::A, "1.3.0", 1, &key)),
        )
        .part(
            "image_b",
            reqwest::multipart::Part::bytes(testkit::image(SlotId::B, "1.3.0", 1, &key)),
        );
    let resp = app
        .client
        .post(app.at("/v1/releases"))
        .bearer_auth(&viewer)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "forbidden").await;
    assert_eq!(rollout_status(&app, r_bad).await["state"], "aborted");

    // The event stream needs a token too.
    let resp = app
        .client
        .get(app.at(&format!("/v1/rollouts/{r_bad}/events")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    browser.quit().await;
    app.server.shutdown().await.unwrap();
}
