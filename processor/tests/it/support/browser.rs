//! A real browser for the status page: Debian's headless Chromium, which
//! `scripts/peers.sh` installs and names in `TEST_INGEST_CHROMIUM`.

use std::path::PathBuf;

async fn chromium(args: &[String]) -> std::process::Output {
    let binary = std::env::var("TEST_INGEST_CHROMIUM").expect(
        "TEST_INGEST_CHROMIUM is not set: run the tests through scripts/peers.sh, which installs Chromium",
    );
    let profile = super::local::temp_dir("chromium-profile");
    // Asynchronously: the page may be served by a task of the test's own runtime.
    let output = tokio::process::Command::new(&binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|err| panic!("run {binary}: {err}"));
    let _ = std::fs::remove_dir_all(profile);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The page at `url` as the browser built it (its DOM, serialised).
pub async fn page_dom(url: &str) -> String {
    let output = chromium(&["--dump-dom".to_owned(), url.to_owned()]).await;
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A screenshot of the page at `url`, `width`×`height`, kept under
/// `target/test-artefacts/NAME.png`; returns its path.
pub async fn screenshot(url: &str, name: &str, width: u32, height: u32) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    let path = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    chromium(&[
        format!("--screenshot={}", path.display()),
        format!("--window-size={width},{height}"),
        url.to_owned(),
    ])
    .await;
    assert!(
        std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
        "no screenshot at {}",
        path.display()
    );
    path
}

/// The value of cell `field` in the row of `dataset` in the status page's DOM.
pub fn cell(dom: &str, dataset: &str, field: &str) -> String {
    let row_start = dom
        .find(&format!("data-dataset=\"{dataset}\""))
        .unwrap_or_else(|| panic!("no row for {dataset} in the page:\n{dom}"));
    let row = &dom[row_start..];
    let row = &row[..row.find("</tr>").unwrap_or(row.len())];
    let at = row
        .find(&format!("data-field=\"{field}\""))
        .unwrap_or_else(|| panic!("no {field} cell in {row}"));
    let after = &row[at..];
    let open_end = after.find('>').expect("tag end") + 1;
    let close = after.find("</td>").expect("cell end");
    after[open_end..close].to_owned()
}
