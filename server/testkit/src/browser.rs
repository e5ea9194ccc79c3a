//! A headless Chromium driven over WebDriver by its ChromeDriver (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/setup): the dashboard's browser test
//! (server/tests/dashboard.rs) and its measurement (server/examples/dashboard_bench.rs).
//! `FOTA_CHROMIUM` and `FOTA_CHROMEDRIVER` name other binaries; `FOTA_DASHBOARD_SCREENSHOTS=DIR`
//! makes [`Browser::screenshot`] save PNG files there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a page may take to show something before [`Browser::wait`] gives up, by default (a
/// liveness bound, not a speed claim: speed is measured by the dashboard benchmark).
pub const PATIENCE: Duration = Duration::from_secs(20);

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A program named by the variable `env`, or the first of `names` on `PATH`; panics saying
/// how to install it.
pub fn find_binary(env: &str, names: &[&str]) -> std::path::PathBuf {
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
pub struct Browser {
    driver: Child,
    /// How long [`Browser::wait`] and [`Browser::click`] wait before they panic.
    pub patience: Duration,
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
    /// Start ChromeDriver and a headless Chromium (1280 x 900), waiting at most [`PATIENCE`]
    /// for a page's condition.
    pub async fn start() -> Self {
        Self::start_with(PATIENCE).await
    }

    /// The same, waiting at most `patience`.
    pub async fn start_with(patience: Duration) -> Self {
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
                started.elapsed() < patience,
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
            patience,
            http,
            session: format!("{base}/session/{session}"),
            _profile: profile,
        }
    }

    /// End the session (and the browser).
    pub async fn quit(&self) {
        self.call(reqwest::Method::DELETE, "", Value::Null).await;
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp: Value = req.send().await.unwrap().json().await.unwrap();
        resp["value"].clone()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, body).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Run `script` (a function body) in the page; its return value.
    pub async fn js(&self, script: &str) -> Value {
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
    pub async fn wait(&self, what: &str, expr: &str) -> Value {
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
            if started.elapsed() > self.patience {
                let page = self.js("return document.body.innerText").await;
                panic!(
                    "waited {:?} for {what} ({expr}); the page shows:\n{page}",
                    self.patience
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.js(&format!(
            "const e = document.querySelector({css:?}); return e ? e.textContent.trim() : null"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    pub async fn element(&self, css: &str) -> Option<String> {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// Click `css` as a person would (the element is re-found if the page redrew it).
    pub async fn click(&self, css: &str) {
        let started = Instant::now();
        loop {
            if let Some(id) = self.element(css).await {
                let v = self.post(&format!("/element/{id}/click"), json!({})).await;
                if v.is_null() {
                    return;
                }
            }
            assert!(started.elapsed() < self.patience, "cannot click {css}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self
            .element(css)
            .await
            .unwrap_or_else(|| panic!("no {css}"));
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    /// Empty an input.
    pub async fn clear(&self, css: &str) {
        let id = self
            .element(css)
            .await
            .unwrap_or_else(|| panic!("no {css}"));
        self.post(&format!("/element/{id}/clear"), json!({})).await;
    }

    /// Replace an input's text.
    pub async fn retype(&self, css: &str, text: &str) {
        self.clear(css).await;
        self.type_into(css, text).await;
    }

    /// Choose `value` in a select, as a person's choice does (its change event fires).
    pub async fn choose(&self, css: &str, value: &str) {
        self.js(&format!(
            "const s = document.querySelector({css:?}); s.value = {value:?}; s.dispatchEvent(new Event('change', {{ bubbles: true }})); return s.value"
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
    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    /// Every visible control of the page has an accessible name, as Chromium's accessibility
    /// tree computes it (WebDriver's computed label), not as this test guesses it.
    pub async fn assert_named_controls(&self, page: &str) {
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
    pub async fn assert_fits(&self, page: &str) {
        let sizes = self
            .js("return [document.documentElement.scrollWidth, window.innerWidth]")
            .await;
        assert!(
            sizes[0].as_u64() <= sizes[1].as_u64(),
            "{page} is wider than the window (scroll width, window width): {sizes}"
        );
    }

    /// A screenshot of the page's first 1,400 px (the window made taller for it).
    pub async fn screenshot_tall(&self, name: &str) {
        if std::env::var("FOTA_DASHBOARD_SCREENSHOTS").is_err() {
            return;
        }
        self.resize(1280, 1400).await;
        self.js("window.scrollTo(0, 0); return 1").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.screenshot(name).await;
        self.resize(1280, 900).await;
    }

    pub async fn screenshot(&self, name: &str) {
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
    pub async fn sign_in(&self, token: &str) {
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
    pub async fn act(&self, action: &str, says: &str) {
        self.act_on(&format!("#action-{action}"), says).await;
    }

    /// Click `css`, check the confirmation it opens says `says`, confirm.
    pub async fn act_on(&self, css: &str, says: &str) {
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
pub fn base64_decode(s: &str) -> Vec<u8> {
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
