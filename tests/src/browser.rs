//! A real browser for the enrolment pages: Debian's `chromium`, headless,
//! driven over WebDriver by its `chromedriver` through `fantoccini`.
//!
//! [`Browser::start`] starts `chromedriver` on a 127.0.0.1 port it binds
//! itself, in a process group of its own, with a temporary dir for chromium's profile,
//! the driver's log and the screenshots, and opens one WebDriver session.
//! Dropping the [`Browser`] ends the session, kills the driver's process
//! group and every process still using that profile (so no chromium
//! outlives its test, also when the test panics), and removes the dir;
//! on a panic it first prints the page the browser was showing.
//!
//! The API is blocking, like the rest of this harness: each call runs on a
//! current-thread tokio runtime owned by the `Browser`, with a deadline.

use crate::programs::Program;
use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use std::future::Future;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one WebDriver command (a page load, a click …) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long chromedriver may take to listen, and chromium to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How the browser is set up.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// The `Accept-Language` the browser sends (chromium's
    /// `intl.accept_languages` preference), e.g. `"nl"` or `"nl-NL,nl"`.
    pub accept_language: String,
    /// Window width and height in CSS pixels.
    pub window: (u32, u32),
}

impl Default for BrowserOptions {
    fn default() -> Self {
        BrowserOptions {
            accept_language: "en-US,en".into(),
            window: (1280, 1600),
        }
    }
}

/// One headless chromium with its chromedriver, for one test.
pub struct Browser {
    /// The test's name, for messages.
    pub name: String,
    /// The temp dir: `profile/`, `chromedriver.log`, screenshots.
    pub dir: PathBuf,
    profile: PathBuf,
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Option<Child>,
    /// Every page load and form submission: (what, how long).
    timings: Mutex<Vec<(String, Duration)>>,
    started: Instant,
    shots: AtomicU32,
}

impl Browser {
    /// A browser with the default options (English, 1280×1600).
    pub fn start(name: &str) -> Browser {
        Browser::start_with(name, &BrowserOptions::default())
    }

    /// A browser set up as `options` say.
    pub fn start_with(name: &str, options: &BrowserOptions) -> Browser {
        let dir = crate::env::fresh_temp_dir("browser-", name);
        let profile = dir.join("profile");
        std::fs::create_dir(&profile).expect("create the profile dir");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut browser = Browser {
            name: name.to_owned(),
            dir,
            profile,
            runtime,
            client: None,
            driver: None,
            timings: Mutex::new(Vec::new()),
            started: Instant::now(),
            shots: AtomicU32::new(0),
        };
        let port = browser.spawn_driver();
        println!(
            "[{name}] chromedriver listening on 127.0.0.1:{port} after {} ms",
            browser.started.elapsed().as_millis()
        );
        let session_started = Instant::now();
        let capabilities = browser.capabilities(options);
        let client = browser
            .runtime
            .block_on(async {
                tokio::time::timeout(
                    START_TIMEOUT,
                    ClientBuilder::new(HttpConnector::new())
                        .capabilities(capabilities)
                        .connect(&format!("http://127.0.0.1:{port}")),
                )
                .await
            })
            .unwrap_or_else(|_| {
                panic!(
                    "chromium did not start within {} s:\n{}",
                    START_TIMEOUT.as_secs(),
                    browser.driver_log()
                )
            })
            .unwrap_or_else(|e| {
                panic!(
                    "no WebDriver session with chromium: {e}\n{}",
                    browser.driver_log()
                )
            });
        browser.client = Some(client);
        println!(
            "[{name}] headless chromium session ready in {} ms (Accept-Language: {})",
            session_started.elapsed().as_millis(),
            options.accept_language
        );
        browser
    }

    fn capabilities(&self, options: &BrowserOptions) -> Capabilities {
        let (width, height) = options.window;
        let args = vec![
            "--headless=new".to_owned(),
            // The tests run as root, where chromium's sandbox cannot start.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-component-update".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", self.profile.display()),
            format!("--lang={}", primary_language(&options.accept_language)),
        ];
        let value = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": Program::Chromium.path(),
                "args": args,
                // What sets the Accept-Language header: with chromium 156
                // headless=new, --lang alone leaves it "en-US,en;q=0.9"
                // (checked against a page that echoes the header).
                "prefs": { "intl": { "accept_languages": options.accept_language } },
            },
        });
        match value {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        }
    }

    /// Starts chromedriver on a port it binds itself (`--port=0`, so that
    /// no other process can take it between a choice and the bind) and
    /// returns the port it says it listens on ("ChromeDriver was started
    /// successfully on port N."), once it accepts connections there.
    fn spawn_driver(&mut self) -> u16 {
        const STARTED: &str = "ChromeDriver was started successfully on port ";
        let log = self.dir.join("chromedriver.log");
        let banner = self.dir.join("chromedriver.out");
        let out = std::fs::File::create(&banner).expect("create chromedriver.out");
        let mut cmd = Command::new(Program::Chromedriver.path());
        cmd.arg("--port=0")
            .arg(format!("--log-path={}", log.display()))
            .arg("--log-level=INFO")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the banner's fd"))
            .stderr(out);
        // Its own process group: chromium inherits it, and Drop ends the
        // whole group without touching any other process.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run chromedriver: {e}"));
        self.driver = Some(child);
        let started = Instant::now();
        loop {
            let said = std::fs::read_to_string(&banner).unwrap_or_default();
            let port = said
                .split_once(STARTED)
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse::<u16>().ok());
            if let Some(port) = port {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return port;
                }
            }
            let exited = self
                .driver
                .as_mut()
                .and_then(|driver| driver.try_wait().expect("try_wait"));
            assert!(
                exited.is_none(),
                "chromedriver exited with {} before listening:\n{said}\n{}",
                exited.expect("checked"),
                self.driver_log()
            );
            assert!(
                started.elapsed() < START_TIMEOUT,
                "chromedriver did not listen within {} s:\n{said}\n{}",
                START_TIMEOUT.as_secs(),
                self.driver_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last 4 KiB of chromedriver's log.
    pub fn driver_log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
        let mut start = text.len().saturating_sub(4096);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser session is closed")
    }

    /// Runs one WebDriver future with [`COMMAND_TIMEOUT`].
    fn run<T, E: std::fmt::Display>(
        &self,
        what: &str,
        future: impl Future<Output = Result<T, E>>,
    ) -> T {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, future).await })
        {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => panic!("[{}] {what}: {e}", self.name),
            Err(_) => panic!(
                "[{}] {what}: no answer within {} s",
                self.name,
                COMMAND_TIMEOUT.as_secs()
            ),
        }
    }

    fn record(&self, what: String, took: Duration) {
        println!("[{}] {what}: {} ms", self.name, took.as_millis());
        self.timings
            .lock()
            .expect("timings lock")
            .push((what, took));
    }

    /// Opens `url` and waits until the page has loaded; returns how long that took.
    pub fn open(&self, url: &str) -> Duration {
        let started = Instant::now();
        self.run(&format!("open {url}"), self.client().goto(url));
        let took = started.elapsed();
        self.record(format!("load {}", short_url(url)), took);
        took
    }

    /// The URL the browser shows now.
    pub fn current_url(&self) -> String {
        self.run("current URL", self.client().current_url())
            .to_string()
    }

    /// The element with `id`; panics (with the page source) if there is none.
    pub fn element(&self, id: &str) -> Element {
        self.try_element(id).unwrap_or_else(|| {
            panic!(
                "[{}] no element #{id} on {}:\n{}",
                self.name,
                self.current_url(),
                self.source()
            )
        })
    }

    /// The element with `id`, if the page has one.
    pub fn try_element(&self, id: &str) -> Option<Element> {
        self.run(
            &format!("find #{id}"),
            self.client().find_all(Locator::Id(id)),
        )
        .into_iter()
        .next()
    }

    /// True when the page has an element with `id`.
    pub fn has(&self, id: &str) -> bool {
        self.try_element(id).is_some()
    }

    /// Every element matching the CSS `selector`.
    pub fn all(&self, selector: &str) -> Vec<Element> {
        self.run(
            &format!("find {selector}"),
            self.client().find_all(Locator::Css(selector)),
        )
    }

    /// The rendered text of each element matching `selector`.
    pub fn texts(&self, selector: &str) -> Vec<String> {
        self.all(selector)
            .iter()
            .map(|e| self.run(&format!("text of {selector}"), e.text()))
            .collect()
    }

    /// Clears the field with `id` and types `text` into it.
    pub fn fill(&self, id: &str, text: &str) {
        let field = self.element(id);
        self.run(&format!("clear #{id}"), field.clear());
        self.run(&format!("type into #{id}"), field.send_keys(text));
    }

    /// Clicks the element with `id` (nothing more: see [`Browser::submit`]).
    pub fn click(&self, id: &str) {
        let element = self.element(id);
        self.run(&format!("click #{id}"), element.click());
    }

    /// Clicks the first element matching the CSS `selector`; panics (with
    /// the page source) if there is none.
    pub fn click_css(&self, selector: &str) {
        let element = self.all(selector).into_iter().next().unwrap_or_else(|| {
            panic!(
                "[{}] nothing matches {selector} on {}:\n{}",
                self.name,
                self.current_url(),
                self.source()
            )
        });
        self.run(&format!("click {selector}"), element.click());
    }

    /// Clicks the element with `id` and waits until another document has
    /// loaded (the form's answer); returns how long that took.
    pub fn submit(&self, id: &str) -> Duration {
        // A mark on the current document: it is gone once a new one loaded.
        // Scripts run by WebDriver are not subject to the page's CSP.
        self.script("window.__otpdOldPage = true; return null;");
        let started = Instant::now();
        self.click(id);
        loop {
            let loaded = self.script(
                "return window.__otpdOldPage === undefined && document.readyState === 'complete';",
            );
            if loaded == Value::Bool(true) {
                break;
            }
            assert!(
                started.elapsed() < COMMAND_TIMEOUT,
                "[{}] clicking #{id} loaded no new page within {} s:\n{}",
                self.name,
                COMMAND_TIMEOUT.as_secs(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed();
        self.record(format!("submit #{id}"), took);
        took
    }

    /// Runs `script` in the page (as WebDriver's "execute script") and returns its value.
    pub fn script(&self, script: &str) -> Value {
        self.run("execute script", self.client().execute(script, Vec::new()))
    }

    /// Sends a WebDriver command of the session that fantoccini has no
    /// method for: `method` (GET, POST or DELETE) on
    /// `/session/{id}/{path}` with `body` (JSON, for a POST); returns the
    /// answer's `value`.
    pub fn session_command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let command = SessionCommand {
            method: method.parse().expect("an HTTP method"),
            path: path.to_owned(),
            body: body.map(|b| b.to_string()),
        };
        self.run(
            &format!("{method} session/…/{path}"),
            self.client().issue_cmd(command),
        )
    }

    /// The rendered text of the element with `id`.
    pub fn text(&self, id: &str) -> String {
        let element = self.element(id);
        self.run(&format!("text of #{id}"), element.text())
    }

    /// The attribute `name` of the element with `id`.
    pub fn attr(&self, id: &str, name: &str) -> Option<String> {
        let element = self.element(id);
        self.run(&format!("attribute {name} of #{id}"), element.attr(name))
    }

    /// The `lang` attribute of `<html>`.
    pub fn html_lang(&self) -> Option<String> {
        let html = self.run("find <html>", self.client().find(Locator::Css("html")));
        self.run("attribute lang of <html>", html.attr("lang"))
    }

    /// The rendered text of the whole page.
    pub fn page_text(&self) -> String {
        let body = self.run("find <body>", self.client().find(Locator::Css("body")));
        self.run("text of <body>", body.text())
    }

    /// The page's DOM as HTML (WebDriver's "get page source").
    pub fn source(&self) -> String {
        self.run("page source", self.client().source())
    }

    /// The HTTP status of the page now shown (from the Navigation Timing
    /// entry; 0 if the browser does not tell).
    pub fn http_status(&self) -> u16 {
        let status = self.script(
            "const nav = performance.getEntriesByType('navigation')[0];\
             return nav && nav.responseStatus !== undefined ? nav.responseStatus : 0;",
        );
        status
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(0)
    }

    /// A PNG of the visible part of the page, written to `DIR/NAME.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.run("screenshot", self.client().screenshot());
        self.save_png(name, &png)
    }

    /// A PNG of the element with `id`, written to `DIR/NAME.png`.
    pub fn screenshot_element(&self, id: &str, name: &str) -> PathBuf {
        let element = self.element(id);
        let png = self.run(&format!("screenshot of #{id}"), element.screenshot());
        self.save_png(name, &png)
    }

    fn save_png(&self, name: &str, png: &[u8]) -> PathBuf {
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "[{}] the screenshot is not a PNG",
            self.name
        );
        let n = self.shots.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(format!("{n:02}-{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Reads the QR code shown in the element with `id` as a phone would:
    /// a screenshot of the element, decoded by `zbarimg`; if that finds
    /// nothing, a screenshot of the whole window. Returns the decoded text.
    pub fn read_qr_code(&self, id: &str) -> String {
        let started = Instant::now();
        let element_png = self.screenshot_element(id, &format!("qr-{id}"));
        let (text, source) = match zbarimg(&element_png) {
            Ok(text) => (text, "element"),
            Err(first) => {
                let page_png = self.screenshot("qr-page");
                match zbarimg(&page_png) {
                    Ok(text) => (text, "window"),
                    Err(second) => panic!(
                        "[{}] zbarimg found no QR code in #{id} ({first}) nor in the window \
                         ({second}); screenshots in {}",
                        self.name,
                        self.dir.display()
                    ),
                }
            }
        };
        self.record(
            format!("screenshot of #{id} decoded by zbarimg ({source})"),
            started.elapsed(),
        );
        text
    }

    /// Every page load and submission so far, with the time since the start.
    pub fn print_figures(&self) {
        let timings = self.timings.lock().expect("timings lock");
        let total: Duration = timings.iter().map(|(_, d)| *d).sum();
        println!(
            "[{}] {} page loads/submissions in {} ms (mean {} ms); {} ms since chromedriver started",
            self.name,
            timings.len(),
            total.as_millis(),
            if timings.is_empty() {
                0
            } else {
                total.as_millis() / timings.len() as u128
            },
            self.started.elapsed().as_millis()
        );
    }

    /// Ends the session, the driver and every chromium process of this profile.
    fn shut_down(&mut self) {
        if let Some(client) = self.client.take() {
            // Closing the session makes chromedriver quit chromium.
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        if let Some(mut driver) = self.driver.take() {
            let pgid = driver.id();
            // SAFETY: kill(2) takes plain integers and touches no memory of
            // ours; the negative pid names the process group that this
            // Browser created for chromedriver and its children.
            unsafe {
                libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
            }
            let _ = driver.wait();
        }
        for pid in processes_using(&self.profile) {
            let _ = crate::process::try_signal(pid, libc::SIGKILL);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- chromedriver log of {} (tail) ----\n{}---- end of chromedriver log ----",
                self.name,
                self.driver_log()
            );
            // Best effort, without panicking again: what the browser showed.
            let shown = self.runtime.block_on(async {
                let client = self.client.as_ref()?;
                let url = tokio::time::timeout(Duration::from_secs(5), client.current_url())
                    .await
                    .ok()?
                    .ok()?;
                let source = tokio::time::timeout(Duration::from_secs(5), client.source())
                    .await
                    .ok()?
                    .ok()?;
                Some((url, source))
            });
            if let Some((url, source)) = shown {
                eprintln!(
                    "---- page shown by the browser of {} ({url}) ----\n{source}\n---- end of page ----",
                    self.name
                );
            }
        }
        self.shut_down();
        if std::env::var_os("OTPD_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "[{}] browser files kept in {}",
                self.name,
                self.dir.display()
            );
        }
    }
}

/// A WebDriver command under the session's URL ([`Browser::session_command`]).
#[derive(Debug)]
struct SessionCommand {
    method: http::Method,
    path: String,
    body: Option<String>,
}

impl fantoccini::wd::WebDriverCompatibleCommand for SessionCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (self.method.clone(), self.body.clone())
    }
}

/// `zbarimg --raw -q PNG`: the decoded text, or why there is none.
pub fn zbarimg(png: &Path) -> Result<String, String> {
    let out = Command::new(Program::Zbarimg.path())
        .args(["--raw", "-q"])
        .arg(png)
        .output()
        .map_err(|e| format!("cannot run zbarimg: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "zbarimg exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    if text.is_empty() {
        return Err("zbarimg printed nothing".into());
    }
    Ok(text)
}

/// The pids whose command line names `profile` (chromium and its helpers).
fn processes_using(profile: &Path) -> Vec<u32> {
    let needle = profile.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
        })
        .collect()
}

/// `nl` of `nl-NL,nl;q=0.9,en`.
fn primary_language(accept_language: &str) -> &str {
    accept_language
        .split([',', ';'])
        .map(str::trim)
        .find(|tag| !tag.is_empty())
        .unwrap_or("en")
}

/// A URL without its last path segment's tail (link tokens are secrets of a
/// sort: the figures need not print them whole).
fn short_url(url: &str) -> String {
    match url.rsplit_once('/') {
        Some((head, tail)) if tail.chars().count() > 12 => {
            format!("{head}/{}…", tail.chars().take(6).collect::<String>())
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_language_is_the_first_tag() {
        assert_eq!(primary_language("nl-NL,nl;q=0.9,en"), "nl-NL");
        assert_eq!(primary_language("nl"), "nl");
        assert_eq!(primary_language(""), "en");
    }

    #[test]
    fn long_last_segments_are_shortened() {
        assert_eq!(
            short_url("http://127.0.0.1:1/enroll/abcdefghijklmnopqrstuvwxyz"),
            "http://127.0.0.1:1/enroll/abcdef…"
        );
        assert_eq!(short_url("http://127.0.0.1:1/a"), "http://127.0.0.1:1/a");
    }
}
