//! Debian's `chromium` in headless mode, for tests that look at the status page the way a
//! person does: `--dump-dom` gives the DOM after the page is parsed and laid out, `--screenshot`
//! a PNG. Every run has its own profile directory and is killed after [`RUN_LIMIT`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest one chromium run may take.
pub const RUN_LIMIT: Duration = Duration::from_secs(45);

pub struct Browser {
    bin: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Chromium when installed (scripts/setup, .ci/run install it); `None` (a skip) elsewhere
    /// outside CI.
    pub fn find() -> Option<Browser> {
        let name = ["chromium", "chromium-browser"].into_iter().find(|n| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {n}"))
                .output()
                .is_ok_and(|o| o.status.success())
        });
        match name {
            Some(n) => Some(Browser {
                bin: PathBuf::from(n),
                profile: tempfile::tempdir().unwrap(),
            }),
            None => {
                super::require_tool("chromium");
                None
            }
        }
    }

    fn run(&self, args: &[String]) -> String {
        let out_dir = tempfile::tempdir().unwrap();
        let stdout = out_dir.path().join("stdout");
        let mut child = Command::new(&self.bin)
            .args([
                "--headless",
                // Root in a container has no user namespace sandbox to drop into.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
            ])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(args)
            .env("HOME", self.profile.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if start.elapsed() > RUN_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium {args:?} did not finish in {RUN_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(stdout).unwrap_or_default()
    }

    /// The DOM of `url` once loaded (JavaScript plays no part: the page has none).
    pub fn dom(&self, url: &str) -> String {
        self.run(&["--dump-dom".into(), url.into()])
    }

    /// A PNG of `url` in a `width` x `height` window.
    pub fn screenshot(&self, url: &str, path: &Path, width: u32, height: u32) {
        let _ = std::fs::remove_file(path);
        self.run(&[
            format!("--screenshot={}", path.display()),
            format!("--window-size={width},{height}"),
            url.into(),
        ]);
        assert!(
            path.exists(),
            "chromium wrote no screenshot {}",
            path.display()
        );
    }
}

/// Where screenshots go: `target/screenshots/` of this build.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
