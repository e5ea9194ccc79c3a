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
//! The WebDriver client is the testkit's (`fota_testkit::browser`, shared with the dashboard's
//! benchmark, server/examples/dashboard_bench.rs). `FOTA_CHROMIUM` and `FOTA_CHROMEDRIVER` name
//! other binaries; `FOTA_DASHBOARD_SCREENSHOTS=DIR` saves the pages it visits as PNG files there
//! (docs/dashboard-*.png were made so).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_protocol::SlotId;
use fota_server::domain::auth::Role;
use fota_testkit::browser::{Browser, PATIENCE};
use fota_testkit::{
    self as testkit, assert_error, backend_tests, fleet, release, rollout_status, spawn_app,
    Behaviour, Db,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

backend_tests!(dashboard_in_a_real_browser, search_and_timeline);

/// The next `status` event's JSON on an event stream (within 10 s).
async fn next_status(stream: &mut reqwest::Response, buf: &mut String) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if block.contains("event: status") {
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                return serde_json::from_str(&data).unwrap();
            }
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("no status event within 10 s")
            .unwrap()
            .expect("the stream ended");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

/// Two streams watching one rollout share its status: one computation per change, not one per
/// stream (a status reads the whole rollout, hundreds of milliseconds at 100,000 devices), both
/// see every change, and once both are gone nobody follows the rollout any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_one_rollout_share_one_status() {
    let app = spawn_app(Db::Sqlite).await;
    fleet(&app, "LS", 4, "f429", "1.0.0").await;
    let rel = release(&app, "f429", "2.0.0", 1).await;
    let r = testkit::start_rollout(&app, json!({"release_id": rel})).await;
    let id = r["id"].as_i64().unwrap();
    let state = &app.server.state;
    let open = || async {
        app.get(&format!("/v1/rollouts/{id}/events"))
            .send()
            .await
            .unwrap()
    };
    let (mut one, mut two) = (open().await, open().await);
    let (mut buf_one, mut buf_two) = (String::new(), String::new());
    for (stream, buf) in [(&mut one, &mut buf_one), (&mut two, &mut buf_two)] {
        assert_eq!(next_status(stream, buf).await["state"], "active");
    }
    assert_eq!(state.live.followed(), 1);
    assert_eq!(
        state.metrics.live_statuses.get(),
        1,
        "one status for two streams"
    );

    let resp = app
        .post(&format!("/v1/rollouts/{id}/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    for (stream, buf) in [(&mut one, &mut buf_one), (&mut two, &mut buf_two)] {
        assert_eq!(next_status(stream, buf).await["state"], "paused");
    }
    assert_eq!(
        state.metrics.live_statuses.get(),
        2,
        "one status per change"
    );

    drop((one, two));
    let deadline = Instant::now() + Duration::from_secs(5);
    while state.live.followed() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state.live.followed(), 0, "nobody watches: nobody follows");
    app.server.shutdown().await.unwrap();
}

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
    let mut reverted = None;
    for d in &mut lamps {
        if let Some(offer) = d.check_in(&app).await {
            let behaviour = outcomes.next().unwrap();
            d.take(&app, &offer, behaviour).await;
            if behaviour == Behaviour::RollsBack {
                reverted = Some(d.id.clone());
            }
        }
    }
    let reverted = reverted.unwrap();
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

    // The boot-state and status filters, from what the devices last said and reported: one
    // device on trial, one whose write protection covers the slot an update would write (B,
    // it runs from A), one reverted by its bootloader.
    for d in &mut lamps {
        d.check_in(&app).await; // the confirmed canaries last checked in on trial
    }
    let on_trial = lamps
        .iter()
        .position(|d| d.id != reverted && d.version == "1.0.0")
        .unwrap();
    lamps[on_trial].trial = true;
    lamps[on_trial].check_in(&app).await;
    let blocked = lamps
        .iter()
        .rposition(|d| d.id != reverted && d.version == "1.0.0")
        .unwrap();
    lamps[blocked].wrp_mask = fota_protocol::layout::SLOT_B.sector_mask();
    lamps[blocked].check_in(&app).await;
    app.flush().await;
    let a = &app;
    let matching = |q: String| async move {
        let v: Value = a
            .get(&format!("/v1/devices?{q}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids(&v)
    };
    assert_eq!(
        matching("boot_state=reverted".into()).await,
        std::slice::from_ref(&reverted)
    );
    assert_eq!(
        matching("boot_state=trial".into()).await,
        [lamps[on_trial].id.clone()]
    );
    assert_eq!(
        matching("status=protection_blocked&model=streetlight".into()).await,
        [lamps[blocked].id.clone()]
    );
    assert_eq!(
        matching("q=lamp&boot_state=confirmed&status=online".into())
            .await
            .len(),
        11
    );
    assert!(
        matching("boot_state=reverted&status=protection_blocked".into())
            .await
            .is_empty()
    );
    for bad in [
        "boot_state=pending",
        "status=confirmed",
        "boot_state=",
        "status=PROTECTION_BLOCKED",
    ] {
        let resp = search(bad).send().await.unwrap();
        assert_error(resp, 400, "invalid_query").await;
    }
    let summary: Value = app
        .get("/v1/fleet/summary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["total"], 16, "{summary}");
    assert_eq!(
        summary["by_model"],
        json!([{"model": "streetlight", "devices": 16}])
    );
    assert_eq!(summary["trial"], 1, "{summary}");
    assert_eq!(summary["confirmed"], 15, "{summary}");
    assert_eq!(summary["reverted"], 1, "{summary}");
    assert_eq!(summary["protection_blocked"], 1, "{summary}");
    // A later update that the reverted device confirms (a `confirmed` event after its
    // `rolled_back`, outside any rollout) ends "reverted": the filter and the summary drop it.
    let d = lamps.iter_mut().find(|d| d.id == reverted).unwrap();
    d.report_event(&app, json!({"kind": "confirmed", "version": "1.2.0"}))
        .await;
    assert!(matching("boot_state=reverted".into()).await.is_empty());
    let summary: Value = app
        .get("/v1/fleet/summary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["reverted"], 0, "{summary}");
    let resp = app
        .client
        .get(app.at(&format!("/v1/rollouts/{id}/timeline")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    app.server.shutdown().await.unwrap();
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
    browser
        .wait("the summary", "document.querySelector('#fleet-total')")
        .await;
    assert_eq!(browser.text("#fleet-total").await, "10");
    assert_eq!(browser.text("#fleet-confirmed").await, "10");
    assert_eq!(browser.text("#fleet-protection-blocked").await, "0");
    assert_eq!(browser.text("#fleet-versions").await, "1.0.0: 10 devices");
    assert_eq!(
        browser.text("#fleet-models").await,
        "streetlight: 10 devices"
    );
    assert_eq!(browser.text("#devices-shown").await, "10 devices shown");
    browser.assert_named_controls("the fleet").await;
    browser.screenshot("fleet").await;
    // What the page asked the server for so far: the summary once, then only searches.
    let b = &browser;
    let asked = |path: &'static str| async move {
        b.js(&format!(
                "return performance.getEntriesByType('resource').filter(e => e.name.includes({path:?})).length"
            ))
            .await
            .as_u64()
            .unwrap()
    };
    assert_eq!(asked("/v1/fleet/summary").await, 1);
    let searches = asked("/v1/devices?").await;
    // The filters are the server's: boot state and status, each a query of its own.
    browser.choose("#filter-status", "protection_blocked").await;
    browser
        .wait(
            "no protection-blocked device",
            "document.querySelector('#devices-shown').textContent === 'No device matches.'",
        )
        .await;
    browser.choose("#filter-status", "").await;
    browser.choose("#filter-boot-state", "trial").await;
    browser
        .wait(
            "no device on trial",
            "performance.getEntriesByType('resource').some(e => e.name.includes('/v1/devices?boot_state=trial&')) && document.querySelector('#devices-shown').textContent === 'No device matches.'",
        )
        .await;
    browser.choose("#filter-boot-state", "confirmed").await;
    browser
        .wait(
            "the confirmed devices",
            "document.querySelectorAll('#devices tbody tr').length === 10",
        )
        .await;
    assert!(browser
        .js("return location.hash")
        .await
        .as_str()
        .unwrap()
        .contains("boot_state=confirmed"));
    browser.choose("#filter-boot-state", "").await;
    // The search is the server's: the page asks for the matches (q=...), not the whole fleet,
    // once the typing pauses (not once a key), and never the summary again.
    browser
        .wait(
            "the whole fleet again",
            "!location.hash.includes('boot_state') && !document.querySelector('#fleet-results[aria-busy]') && document.querySelectorAll('#devices tbody tr').length === 10",
        )
        .await;
    let before = asked("/v1/devices?").await;
    assert!(
        before - searches <= 5,
        "{} searches for 4 choices",
        before - searches
    );
    browser.type_into("#filter-q", "LAMP-0003").await;
    browser
        .wait(
            "the search to narrow the list",
            "document.querySelectorAll('#devices tbody tr').length === 1 && document.querySelector('#devices tbody tr').dataset.device === 'lamp-0003'",
        )
        .await;
    assert_eq!(
        browser
            .js("return performance.getEntriesByType('resource').some(e => e.name.includes('/v1/devices?q=LAMP-0003&limit=100'))")
            .await,
        json!(true),
        "the search went to the server, for at most a page"
    );
    let typed = asked("/v1/devices?").await - before;
    assert!(typed <= 3, "{typed} searches for the 9 keys of one word");
    assert_eq!(browser.text("#devices-shown").await, "1 device shown");
    assert_eq!(
        asked("/v1/fleet/summary").await,
        1,
        "the summary is read once a visit"
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
    // Counts with their nouns: one device, three devices.
    assert_eq!(browser.text("#chart .chart-top").await, "1 device");
    assert_eq!(
        browser.text("#stages tr[data-stage=\"1\"] td").await,
        "1 (3 devices)"
    );
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
    // The halt card is an alert: announced when it appears, so it is inserted once, not again
    // with each status that follows.
    browser
        .js("window.fotaAlerts = []; new MutationObserver(ms => { for (const m of ms) for (const n of m.addedNodes) if (n.nodeType === 1) for (const a of [n, ...n.querySelectorAll('[role=alert]')]) if (a.getAttribute('role') === 'alert' && a.textContent.trim()) window.fotaAlerts.push(a.id); }).observe(document.body, { childList: true, subtree: true }); return 1")
        .await;
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
    browser
        .js("window.fotaHalt = document.querySelector('#halt'); return 1")
        .await;
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
    assert_eq!(
        browser.js("return window.fotaAlerts").await,
        json!(["halt"]),
        "alerts inserted while the halt came in and the page kept updating"
    );
    assert_eq!(
        browser
            .js("return window.fotaHalt === document.querySelector('#halt')")
            .await,
        json!(true)
    );

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

    // Abort it from the page, through its confirmation. The halt card stays, the same node: the
    // statuses that follow do not announce it again.
    browser
        .js("window.fotaAlerts = []; window.fotaHalt = document.querySelector('#halt'); return 1")
        .await;
    browser
        .act("abort", &format!("Abort rollout #{r_bad}"))
        .await;
    browser
        .wait(
            "the abort",
            "document.querySelector('#rollout-state').textContent === 'aborted'",
        )
        .await;
    assert_eq!(browser.js("return window.fotaAlerts").await, json!([]));
    assert_eq!(
        browser
            .js("return window.fotaHalt === document.querySelector('#halt')")
            .await,
        json!(true)
    );
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
