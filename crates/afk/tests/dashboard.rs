//! The dashboard as a person sees it: headless Chromium (Debian's `chromium`) loads `/` from a
//! running control plane, driven over the DevTools protocol. It sees a running attempt appear and
//! turn into a success without a reload, follows the links, and fits a phone's screen. Without
//! `chromium` on the PATH the test prints one SKIP line.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use afk_core::JobState;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page of headless Chromium, driven over the DevTools protocol.
struct Browser {
    _process: tokio::process::Child,
    _profile: tempfile::TempDir,
    page: Socket,
    next_id: u64,
}

impl Browser {
    /// Starts `chromium` and connects to its first page; `None` when it is not installed.
    async fn start() -> Option<Browser> {
        let binary = ["chromium", "chromium-browser"].into_iter().find(|b| which(b))?;
        let profile = tempfile::tempdir().unwrap();
        let mut process = tokio::process::Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let mut lines = BufReader::new(process.stderr.take().unwrap()).lines();
        let browser_ws = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium ended without a DevTools address");
        })
        .await
        .expect("chromium says where DevTools listens");
        // Keep draining its stderr so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let targets: Vec<Value> = reqwest::get(format!("http://{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page_ws = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page")
            .to_owned();
        let (page, _) = tokio_tungstenite::connect_async(page_ws)
            .await
            .expect("the page's socket");
        Some(Browser {
            _process: process,
            _profile: profile,
            page,
            next_id: 0,
        })
    }

    /// Sends `method` and waits for its answer (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.page.send(Message::Text(message.into())).await.unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .expect("DevTools answers")
                .expect("the socket is open")
                .unwrap();
            if let Message::Text(text) = frame {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    assert!(value.get("error").is_none(), "{method}: {value}");
                    return value["result"].clone();
                }
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` every 50 ms until it is `true`; panics after `limit`.
    async fn wait_for(&mut self, expression: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(expression).await == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "not within {limit:?}: {expression}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn which(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

#[tokio::test]
async fn the_dashboard_shows_an_attempt_run_and_succeed_live_with_its_links() {
    let Some(mut browser) = Browser::start().await else {
        eprintln!("SKIP: chromium is not installed (apt-get install chromium): the dashboard's browser test did not run");
        return;
    };
    let mut world = World::new(Duration::from_millis(2500)).await;
    world.config.watch.poll_interval = Duration::from_millis(100);
    let app = world.app().await;
    let addr = app.http_addr().unwrap();
    let ledger = app.ledger().clone();

    browser.call("Page.enable", json!({})).await;
    browser
        .call("Page.navigate", json!({"url": format!("http://{addr}/")}))
        .await;
    browser
        .wait_for(
            "document.querySelector('#live') !== null && document.querySelector('#live').textContent === 'live'",
            Duration::from_secs(20),
        )
        .await;
    let loaded_at = browser.eval("window.afkLoadedAt").await;
    assert!(loaded_at.is_number(), "{loaded_at}");
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#running tbody tr').length")
            .await,
        json!(0)
    );

    // Now afk works: an issue arrives and its attempt runs.
    world.add_issue(REPO_A, 1, "Fix the pager.");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let row = "document.querySelector('#running tr[data-issue=\"acme/api#1\"]')";
    browser
        .wait_for(&format!("{row} !== null"), Duration::from_secs(20))
        .await;
    let jobs = ledger.jobs().await.unwrap();
    let thread = ledger.attempts(jobs[0].id).await.unwrap()[0]
        .thread_id
        .to_string();
    assert_eq!(
        browser.eval(&format!("{row}.dataset.thread")).await,
        json!(thread),
        "the running row is the attempt's"
    );
    let thread_href = browser
        .eval(&format!("{row}.querySelector('a.thread-link').href"))
        .await;
    assert_eq!(
        thread_href,
        json!(format!("{}/{thread}", world.sim.url())),
        "linked to T3's web UI"
    );
    let issue_href = browser
        .eval(&format!("{row}.querySelector('a.issue-link').href"))
        .await;
    assert_eq!(
        issue_href,
        json!(format!("http://{addr}/api/v1/acme/api/1")),
        "a local issue links to its page in the API"
    );
    let issue_page = reqwest::get(issue_href.as_str().unwrap()).await.unwrap();
    assert_eq!(issue_page.status().as_u16(), 200);
    let issue_page: Value = issue_page.json().await.unwrap();
    assert_eq!(issue_page["issue_identifier"], "acme/api#1");
    assert_eq!(
        browser
            .eval("document.querySelector('#counts li[data-state=\"running\"] b').textContent")
            .await,
        json!("1")
    );

    // It ends: the row moves to the outcomes as a success, without a reload.
    let outcome = "document.querySelector('#recent tr[data-issue=\"acme/api#1\"] .outcome')";
    browser
        .wait_for(
            &format!("{outcome} !== null && {outcome}.textContent === 'succeeded' && {row} === null"),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(ledger.jobs().await.unwrap()[0].state, JobState::Succeeded);
    assert_eq!(
        browser.eval("window.afkLoadedAt").await,
        loaded_at,
        "the page was not reloaded"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('#recent tr[data-issue=\"acme/api#1\"] a.thread-link').href")
            .await,
        json!(format!("{}/{thread}", world.sim.url()))
    );

    // On a phone's screen: nothing wider than the screen.
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
        )
        .await;
    browser
        .wait_for(
            "document.documentElement.scrollWidth <= window.innerWidth",
            Duration::from_secs(5),
        )
        .await;
    if let Ok(path) = std::env::var("AFK_DASHBOARD_SCREENSHOT") {
        let shot = browser
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64_decode(shot["data"].as_str().unwrap());
        std::fs::write(path, png).unwrap();
    }
    let _ = stop.send(());
    run.await.unwrap().unwrap();
}

/// Standard base64, for the screenshot a person may ask for.
fn base64_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let Some(v) = alphabet.iter().position(|a| *a == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
