//! The local platform's processes in tests: a folder per test, `processor dev` with the
//! lines it prints, and queries of its database.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use processor::local::Layout;

/// A fresh folder under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "demo-test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The rows `sql` selects from the local platform's database in `dir`.
pub fn query<T>(
    dir: &Path,
    sql: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let connection = rusqlite::Connection::open(
        Layout {
            dir: dir.to_owned(),
        }
        .database(),
    )
    .expect("open");
    let mut statement = connection.prepare(sql).expect("prepare");
    statement
        .query_map([], row)
        .and_then(Iterator::collect)
        .expect("query")
}

/// A running local platform (`processor dev`, or `serve` under [local]), and the lines it
/// prints.
pub struct Dev {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Dev {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["dev", "--dir", dir.to_str().expect("utf-8 path")];
        args.extend(["--kinesis-port", "0", "--status-port", "0"]);
        args.extend(extra);
        Self::run(&args)
    }

    /// `processor ARGS` that runs the local platform (`dev`, or `serve` under [local]).
    pub fn run(args: &[&str]) -> Self {
        let mut child = Command::new(crate::PROCESSOR)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dev");
        let stderr = child.stderr.take().expect("piped");
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let dev = Self { child, lines };
        dev.wait_for("watching");
        dev
    }

    /// The first line (from now) that contains `what`.
    pub fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("dev never said {what:?}");
    }

    /// The URL of the Kinesis-compatible endpoint, from the line that announces it.
    pub fn kinesis_endpoint(&self) -> String {
        let line = self.wait_for("Kinesis endpoint on");
        line.split_whitespace()
            .find(|word| word.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned()
    }

    /// The URL of the status page, from the line that announces it.
    pub fn status_page(&self) -> String {
        let line = self.wait_for("status page on");
        line.split_whitespace()
            .find(|word| word.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned()
    }

    /// For each of `whats`, the first line (from now) that contains it, in whatever order
    /// the lines come.
    pub fn wait_for_each(&self, whats: &[String]) -> Vec<String> {
        let mut found: Vec<Option<String>> = vec![None; whats.len()];
        let deadline = Instant::now() + Duration::from_secs(120);
        while found.iter().any(Option::is_none) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            if let Some(at) =
                (0..whats.len()).find(|&i| found[i].is_none() && line.contains(&whats[i]))
            {
                found[at] = Some(line);
            }
        }
        whats
            .iter()
            .zip(found)
            .map(|(what, line)| line.unwrap_or_else(|| panic!("dev never said {what:?}")))
            .collect()
    }

    pub fn stop(mut self) {
        self.child.kill().expect("stop dev");
        self.child.wait().expect("reaped");
    }
}

/// A plain HTTP/1.1 GET of `url` (`http://127.0.0.1:PORT/path`), blocking: status and body.
pub fn get(url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

/// `processor [--config CONFIG] ARGS`, run to its end.
pub fn processor_output(config: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(crate::PROCESSOR);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.args(args).output().expect("run processor")
}

/// `processor [--config CONFIG] ARGS`: whether it succeeded, and what it said (standard
/// output, then standard error).
pub fn run_processor(config: Option<&Path>, args: &[&str]) -> (bool, String) {
    let output = processor_output(config, args);
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), said)
}
