//! A headless Chromium driven through ChromeDriver (W3C WebDriver, JSON over HTTP), for
//! end-to-end tests of pages the node serves. One chromedriver process and one session per
//! [`Browser`], on a random port; both end on drop.
//!
//! Binaries: Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`), or `SALESBOY_TEST_CHROMIUM_BIN` and
//! `SALESBOY_TEST_CHROMEDRIVER_BIN`. Screenshots go to [`artifacts_dir`].

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// How long chromedriver may take to answer `GET /status` with `ready`.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Between two probes of a wait.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// One WebDriver command at most (page loads and scripts stop earlier, at [`PAGE_TIMEOUT`]).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The session's page-load and script timeouts.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Browser::accept_alert`] and [`Browser::dismiss_alert`] wait for a dialog.
const ALERT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long ending a [`Browser`] waits for chromedriver to close Chromium and exit.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The browser window's size until [`Browser::set_window_size`].
const WINDOW_SIZE: (u32, u32) = (1280, 800);
/// The key of a W3C element reference in JSON (the "web element identifier").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver error codes that retrying cannot cure: waits fail at once on them.
const FATAL_ERRORS: [&str; 9] = [
    "invalid session id",
    "session not created",
    "no such window",
    "unexpected alert open",
    "invalid argument",
    "invalid selector",
    "unknown command",
    "unknown method",
    "unsupported operation",
];

/// The chromedriver binary: `SALESBOY_TEST_CHROMEDRIVER_BIN`, else `/usr/bin/chromedriver`.
pub fn chromedriver_binary() -> PathBuf {
    std::env::var_os("SALESBOY_TEST_CHROMEDRIVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// The Chromium binary: `SALESBOY_TEST_CHROMIUM_BIN`, else `/usr/bin/chromium`.
pub fn chromium_binary() -> PathBuf {
    std::env::var_os("SALESBOY_TEST_CHROMIUM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Where tests leave screenshots: `SALESBOY_TEST_ARTIFACTS`, else `test-artifacts` in the
/// target folder (`CARGO_TARGET_DIR` or `<workspace>/target`). Created if missing (best
/// effort: writing into it reports the error).
pub fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("SALESBOY_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::workspace_root().join("target"))
                .join("test-artifacts")
        });
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A headless Chromium session behind its own chromedriver. Dropping it shuts chromedriver
/// down (closing Chromium and deleting its profile; blocking at most 5 s, then killing it);
/// [`Browser::quit`] does the same without blocking.
#[derive(Debug)]
pub struct Browser {
    session: Session,
    port: u16,
    ended: bool,
    driver: Child,
}

/// An element of the current page, as WebDriver refers to it: it goes stale when the page
/// replaces it.
#[derive(Debug, Clone)]
pub struct Element {
    session: Session,
    id: String,
}

impl Browser {
    /// Starts chromedriver on a free port, waits until it is ready (at most 20 s) and opens a
    /// session: headless Chromium, no sandbox (tests run as root), 1280×800, browser console
    /// logged.
    pub async fn start() -> Result<Self, String> {
        salesboy_node::run::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the http client: {e}"))?;
        let chromium = chromium_binary();
        if !chromium.is_file() {
            return Err(format!(
                "no chromium at {} (install Debian's chromium or set SALESBOY_TEST_CHROMIUM_BIN)",
                chromium.display()
            ));
        }

        // The port is free when picked, not necessarily when chromedriver binds it: a
        // driver that exits at once is retried on another port.
        let mut attempt = 0;
        let (mut driver, port) = loop {
            attempt += 1;
            let port = free_port()?;
            let mut driver = spawn_driver(port)?;
            match wait_ready(&http, &mut driver, port).await {
                Ok(()) => break (driver, port),
                Err(DriverStart::Exited(status)) if attempt < 3 => {
                    tracing::debug!(port, %status, "chromedriver exited at start, retrying");
                }
                Err(error) => return Err(error.to_string()),
            }
        };

        let (width, height) = WINDOW_SIZE;
        let page_ms = PAGE_TIMEOUT.as_millis() as u64;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"pageLoad": page_ms, "script": page_ms},
        }}});
        let base = format!("http://127.0.0.1:{port}");
        let created = Session {
            http: http.clone(),
            url: base.clone(),
        }
        .command(Method::POST, "/session", Some(capabilities))
        .await;
        let id = match created.map(|value| value["sessionId"].as_str().map(str::to_owned)) {
            Ok(Some(id)) => id,
            Ok(None) => {
                let _ = driver.kill().await;
                return Err("chromedriver answered POST /session without a sessionId".into());
            }
            Err(error) => {
                let _ = driver.kill().await;
                return Err(error.to_string());
            }
        };
        Ok(Self {
            session: Session {
                http,
                url: format!("{base}/session/{id}"),
            },
            port,
            ended: false,
            driver,
        })
    }

    /// Ends the session (closing Chromium) and shuts chromedriver down: an error if the
    /// session could not be ended.
    pub async fn quit(mut self) -> Result<(), String> {
        self.ended = true;
        let deleted = self.session.command(Method::DELETE, "", None).await;
        // `DELETE` answers before the profile folder is deleted; killing chromedriver then
        // would leave it in /tmp. `/shutdown` (ChromeDriver's own) exits after cleaning up.
        let shutdown = format!("http://127.0.0.1:{}/shutdown", self.port);
        let _ = self.session.http.get(shutdown).send().await;
        if tokio::time::timeout(QUIT_TIMEOUT, self.driver.wait())
            .await
            .is_err()
        {
            let _ = self.driver.kill().await;
        }
        deleted.map(drop).map_err(|e| e.to_string())
    }

    /// Resizes the browser window (CSS pixels, outer size).
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<(), String> {
        let body = json!({"width": width, "height": height});
        self.post("/window/rect", body).await.map(drop)
    }

    /// Navigates to `url` and waits for the page to load (at most 30 s).
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.post("/url", json!({ "url": url })).await.map(drop)
    }

    /// The current page's URL.
    pub async fn current_url(&self) -> Result<String, String> {
        let value = self.get("/url").await?;
        as_string(value, "GET /url")
    }

    /// The first element matching the CSS selector `css`; an error if none does.
    pub async fn find(&self, css: &str) -> Result<Element, String> {
        self.session.find(css).await.map_err(|e| e.to_string())
    }

    /// Every element matching the CSS selector `css`, in document order (maybe none).
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let body = json!({"using": "css selector", "value": css});
        let value = self.post("/elements", body).await?;
        let Value::Array(references) = value else {
            return Err(format!("POST /elements answered {value}"));
        };
        references
            .into_iter()
            .map(|reference| self.session.element(reference))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())
    }

    /// Waits (at most `timeout`) until an element matches `css` and is displayed.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element, String> {
        let what = format!("waiting for a displayed `{css}`");
        poll(&what, timeout, async || {
            let element = self.session.find(css).await?;
            Ok(match element.session.displayed(&element.id).await? {
                true => Probe::Done(element),
                false => Probe::Retry("present but not displayed".into()),
            })
        })
        .await
    }

    /// Waits (at most `timeout`) until the first element matching `css` has a text that
    /// contains `needle`: that text. The error tells the last text seen.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let what = format!("waiting for `{css}` to contain {needle:?}");
        poll(&what, timeout, async || {
            let element = self.session.find(css).await?;
            let text = element.session.text(&element.id).await?;
            Ok(match text.contains(needle) {
                true => Probe::Done(text),
                false => Probe::Retry(format!("text {text:?}")),
            })
        })
        .await
    }

    /// Waits (at most `timeout`) until the JavaScript expression `expression` is truthy in
    /// the page (evaluated as `return Boolean(expression)`; throwing counts as false).
    pub async fn wait_until(&self, expression: &str, timeout: Duration) -> Result<(), String> {
        let what = format!("waiting until `{expression}`");
        let script = format!("return Boolean(\n{expression}\n);");
        poll(&what, timeout, async || {
            let value = self.session.execute(&script, &[]).await?;
            Ok(match value {
                Value::Bool(true) => Probe::Done(()),
                other => Probe::Retry(format!("it returned {other}")),
            })
        })
        .await
    }

    /// Runs `script` (a function body: `arguments[i]` are `args`, `return` gives the result)
    /// in the page and waits for it: what it returns, as JSON. Pass elements with
    /// [`Element::to_arg`].
    pub async fn execute(&self, script: &str, args: &[Value]) -> Result<Value, String> {
        self.session
            .execute(script, args)
            .await
            .map_err(|e| e.to_string())
    }

    /// Accepts the open `alert`/`confirm`/`prompt` dialog (waiting for one at most 5 s): its
    /// text.
    pub async fn accept_alert(&self) -> Result<String, String> {
        self.close_alert("/alert/accept").await
    }

    /// Dismisses (cancels) the open dialog (waiting for one at most 5 s): its text.
    pub async fn dismiss_alert(&self) -> Result<String, String> {
        self.close_alert("/alert/dismiss").await
    }

    async fn close_alert(&self, path: &str) -> Result<String, String> {
        let text = poll("waiting for a dialog", ALERT_TIMEOUT, async || {
            let value = self
                .session
                .command(Method::GET, "/alert/text", None)
                .await?;
            Ok(Probe::Done(value.as_str().unwrap_or_default().to_owned()))
        })
        .await?;
        self.post(path, json!({})).await?;
        Ok(text)
    }

    /// Saves a PNG of the viewport at `path`, relative to [`artifacts_dir`] unless absolute
    /// (parent folders created): the file's full path.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> Result<PathBuf, String> {
        let path = artifacts_dir().join(path);
        let value = self.get("/screenshot").await?;
        let encoded = as_string(value, "GET /screenshot")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("GET /screenshot answered bad base64: {e}"))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// The browser console's errors (level `SEVERE`) since the last call: `console.error`
    /// calls, uncaught exceptions, failed resource loads. Read through ChromeDriver's log
    /// endpoint (`POST /session/{id}/se/log`, type `browser`), which hands each entry out
    /// once. A `console.error("x")` reads `<url> <line>:<column> "x"`.
    pub async fn console_errors(&self) -> Result<Vec<String>, String> {
        let value = self.post("/se/log", json!({"type": "browser"})).await?;
        let Value::Array(entries) = value else {
            return Err(format!("POST /se/log answered {value}"));
        };
        Ok(entries
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let value = self.session.command(Method::GET, path, None).await;
        value.map_err(|e| e.to_string())
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let value = self.session.command(Method::POST, path, Some(body)).await;
        value.map_err(|e| e.to_string())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.ended {
            shut_driver_down(self.port);
            let deadline = Instant::now() + QUIT_TIMEOUT;
            while matches!(self.driver.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.driver.start_kill();
    }
}

impl Element {
    /// Clicks the element's centre (scrolled into view first).
    pub async fn click(&self) -> Result<(), String> {
        self.post("/click", json!({})).await.map(drop)
    }

    /// Types `text` into the element (focused first), after what it already holds.
    pub async fn send_keys(&self, text: &str) -> Result<(), String> {
        self.post("/value", json!({ "text": text })).await.map(drop)
    }

    /// Empties an input, a textarea or an editable element.
    pub async fn clear(&self) -> Result<(), String> {
        self.post("/clear", json!({})).await.map(drop)
    }

    /// The element's rendered text (as the user sees it; empty when hidden).
    pub async fn text(&self) -> Result<String, String> {
        self.session.text(&self.id).await.map_err(|e| e.to_string())
    }

    /// The markup attribute `name`, `None` if the element has none. What was typed into an
    /// input is its [`Element::property`] `value`, not its attribute.
    pub async fn attribute(&self, name: &str) -> Result<Option<String>, String> {
        let path = format!("/element/{}/attribute/{name}", self.id);
        let value = self.session.command(Method::GET, &path, None).await;
        match value.map_err(|e| e.to_string())? {
            Value::Null => Ok(None),
            Value::String(text) => Ok(Some(text)),
            other => Ok(Some(other.to_string())),
        }
    }

    /// The DOM property `name` (`value`, `checked`, …) as JSON: `null` when undefined.
    pub async fn property(&self, name: &str) -> Result<Value, String> {
        let path = format!("/element/{}/property/{name}", self.id);
        let value = self.session.command(Method::GET, &path, None).await;
        value.map_err(|e| e.to_string())
    }

    /// Whether the element is rendered visibly.
    pub async fn is_displayed(&self) -> Result<bool, String> {
        self.session
            .displayed(&self.id)
            .await
            .map_err(|e| e.to_string())
    }

    /// The element as an argument of [`Browser::execute`].
    pub fn to_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    async fn post(&self, action: &str, body: Value) -> Result<Value, String> {
        let path = format!("/element/{}{action}", self.id);
        let value = self.session.command(Method::POST, &path, Some(body)).await;
        value.map_err(|e| e.to_string())
    }
}

/// A WebDriver session's URL and the client that sends it commands.
#[derive(Debug, Clone)]
struct Session {
    http: reqwest::Client,
    url: String,
}

impl Session {
    /// Sends one command to `url` + `path`: its `value`, or the error WebDriver answered.
    async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CommandError> {
        let command = format!("{method} {path}");
        let failed = |code: Option<&str>, message: String| CommandError {
            command: command.clone(),
            code: code.map(str::to_owned),
            message,
        };
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| failed(None, format!("chromedriver unreachable: {e}")))?;
        let status = response.status();
        let mut answer: Value = response
            .json()
            .await
            .map_err(|e| failed(None, format!("{status} with a body that is not JSON: {e}")))?;
        let value = answer["value"].take();
        match value["error"].as_str() {
            Some(code) => {
                // ChromeDriver's first line is the useful one; then come session info and a
                // stack trace.
                let message = value["message"].as_str().unwrap_or_default();
                let message = message.lines().next().unwrap_or_default().to_owned();
                Err(failed(Some(code), message))
            }
            None if !status.is_success() => Err(failed(None, format!("{status}: {value}"))),
            None => Ok(value),
        }
    }

    async fn find(&self, css: &str) -> Result<Element, CommandError> {
        let body = json!({"using": "css selector", "value": css});
        let reference = self.command(Method::POST, "/element", Some(body)).await?;
        self.element(reference)
    }

    /// An element from its JSON reference.
    fn element(&self, reference: Value) -> Result<Element, CommandError> {
        match reference[ELEMENT_KEY].as_str() {
            Some(id) => Ok(Element {
                session: self.clone(),
                id: id.to_owned(),
            }),
            None => Err(CommandError {
                command: "element reference".into(),
                code: None,
                message: format!("not an element: {reference}"),
            }),
        }
    }

    async fn text(&self, element: &str) -> Result<String, CommandError> {
        let path = format!("/element/{element}/text");
        let value = self.command(Method::GET, &path, None).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    async fn displayed(&self, element: &str) -> Result<bool, CommandError> {
        let path = format!("/element/{element}/displayed");
        let value = self.command(Method::GET, &path, None).await?;
        Ok(value == Value::Bool(true))
    }

    async fn execute(&self, script: &str, args: &[Value]) -> Result<Value, CommandError> {
        let body = json!({"script": script, "args": args});
        self.command(Method::POST, "/execute/sync", Some(body))
            .await
    }
}

/// A WebDriver command that failed: its WebDriver error code, when it got that far.
#[derive(Debug)]
struct CommandError {
    command: String,
    code: Option<String>,
    message: String,
}

impl CommandError {
    /// Whether waiting longer cannot help: no answer, or an error that will not go away.
    fn is_fatal(&self) -> bool {
        self.code
            .as_deref()
            .is_none_or(|code| FATAL_ERRORS.contains(&code))
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) if !self.message.starts_with(code.as_str()) => {
                write!(f, "{}: {code}: {}", self.command, self.message)
            }
            _ => write!(f, "{}: {}", self.command, self.message),
        }
    }
}

/// One look of a wait: done, or what was seen instead.
enum Probe<T> {
    Done(T),
    Retry(String),
}

/// Probes every [`POLL_INTERVAL`] until done or `timeout` has passed (at least once).
/// Retryable WebDriver errors count as "not yet"; the error names `what` was awaited and
/// the last thing seen.
async fn poll<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<Probe<T>, CommandError>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe().await {
            Ok(Probe::Done(value)) => return Ok(value),
            Ok(Probe::Retry(seen)) => seen,
            Err(error) if error.is_fatal() => return Err(format!("{what}: {error}")),
            Err(error) => error.to_string(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{what}: not within {timeout:?}; last seen: {seen}"));
        }
        tokio::time::sleep(left.min(POLL_INTERVAL)).await;
    }
}

/// Why chromedriver did not become ready.
#[derive(Debug, thiserror::Error)]
enum DriverStart {
    #[error("chromedriver exited before it was ready ({0})")]
    Exited(ExitStatus),
    #[error("chromedriver on port {port} was not ready within {timeout:?}: {last}")]
    NotReady {
        port: u16,
        timeout: Duration,
        last: String,
    },
}

fn spawn_driver(port: u16) -> Result<Child, String> {
    let binary = chromedriver_binary();
    Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {}: {e} (install Debian's chromium-driver or set SALESBOY_TEST_CHROMEDRIVER_BIN)",
                binary.display()
            )
        })
}

/// Polls `GET /status` until chromedriver says it is ready, at most [`DRIVER_START_TIMEOUT`].
async fn wait_ready(
    http: &reqwest::Client,
    driver: &mut Child,
    port: u16,
) -> Result<(), DriverStart> {
    let deadline = Instant::now() + DRIVER_START_TIMEOUT;
    let url = format!("http://127.0.0.1:{port}/status");
    loop {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(DriverStart::Exited(status));
        }
        let last = match http.get(&url).timeout(POLL_INTERVAL * 20).send().await {
            Ok(response) => match response.json::<Value>().await {
                Ok(answer) if answer["value"]["ready"] == true => return Ok(()),
                Ok(answer) => answer.to_string(),
                Err(error) => error.to_string(),
            },
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(DriverStart::NotReady {
                port,
                timeout: DRIVER_START_TIMEOUT,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A free port on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    crate::free_port().map_err(|e| format!("cannot find a free port: {e}"))
}

/// Sends chromedriver `GET /shutdown` (it ends its sessions, closing Chromium and deleting
/// its profile, then exits) over a plain blocking socket, as a drop cannot await; waits for
/// the first bytes of the answer, at most [`QUIT_TIMEOUT`]. Best effort.
fn shut_driver_down(port: u16) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, QUIT_TIMEOUT) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(QUIT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(QUIT_TIMEOUT));
    let request =
        format!("GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read(&mut [0; 256]);
    }
}

/// A command's value as a string.
fn as_string(value: Value, command: &str) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(format!("{command} answered {other}, not a string")),
    }
}
