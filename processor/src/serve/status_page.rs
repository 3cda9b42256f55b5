//! The `/status` page and `/status.json`: the view of `processor status`, served on the
//! processor's HTTP port (and by the local mode), refreshing itself. Read-only, rendered on
//! the server (no script), readable on a phone. It never shows row contents: dead-letter
//! reasons are shown with their values masked; `processor rejects` reads raw rows, with
//! warehouse credentials.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use shared::catalog::Catalog;
use shared::queue::WorkQueue;

use crate::operations::status::{DatasetStatus, StatusReport, StatusSources, parse_window, status};
use crate::warehouse::Warehouse;

/// How long a gathered view is served again (the page refreshes at this pace too), so
/// that many viewers cost one set of queries and dead letters are read at most this often.
const CACHE_FOR: Duration = Duration::from_secs(30);
/// Dead letters read for their reasons per gathering.
const DEAD_LETTER_LOOK: usize = 100;
/// The windows the page offers; the first is the default. A fixed set keeps the cache
/// (one view per window) and the dead-letter looks bounded.
const WINDOWS: [&str; 3] = ["24h", "1h", "7d"];

/// What the page reads.
pub struct StatusPage {
    catalog: Arc<Catalog>,
    warehouse: Arc<dyn Warehouse>,
    work_queue: Arc<dyn WorkQueue>,
    dead_letter: Option<Arc<dyn WorkQueue>>,
    cache: tokio::sync::Mutex<std::collections::HashMap<&'static str, (Instant, StatusReport)>>,
}

impl std::fmt::Debug for StatusPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusPage").finish_non_exhaustive()
    }
}

/// An answer: status code, content type, body.
pub type PageAnswer = (u16, &'static str, String);

impl StatusPage {
    pub fn new(
        catalog: Arc<Catalog>,
        warehouse: Arc<dyn Warehouse>,
        work_queue: Arc<dyn WorkQueue>,
        dead_letter: Option<Arc<dyn WorkQueue>>,
    ) -> Self {
        Self {
            catalog,
            warehouse,
            work_queue,
            dead_letter,
            cache: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Answers `/status` (HTML) and `/status.json`; `None` for any other path.
    /// `query` may hold `since=` with one of [`WINDOWS`].
    pub async fn respond(&self, path: &str, query: Option<&str>) -> Option<PageAnswer> {
        let json = match path {
            "/status" | "/status/" => false,
            "/status.json" => true,
            _ => return None,
        };
        let asked = query
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("since=")))
            .unwrap_or(WINDOWS[0]);
        let Some(window) = WINDOWS.iter().copied().find(|w| *w == asked) else {
            let choices = WINDOWS.join(", ");
            return Some((
                400,
                "text/plain; charset=utf-8",
                format!(
                    "since= takes one of {choices}; `processor status --since` takes any window\n"
                ),
            ));
        };
        let report = match self.report(window).await {
            Ok(report) => report,
            Err(reason) => return Some((503, "text/plain; charset=utf-8", format!("{reason}\n"))),
        };
        Some(if json {
            let body = serde_json::to_string(&report).unwrap_or_default();
            (200, "application/json", body)
        } else {
            (200, "text/html; charset=utf-8", render(&report, window))
        })
    }

    async fn report(&self, window: &'static str) -> Result<StatusReport, String> {
        let since = parse_window(window, SystemTime::now())?;
        let mut cache = self.cache.lock().await;
        if let Some((at, report)) = cache.get(window)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(report.clone());
        }
        let sources = StatusSources {
            catalog: &self.catalog,
            warehouse: self.warehouse.as_ref(),
            work_queue: self.work_queue.as_ref(),
            dead_letter: self.dead_letter.as_deref(),
        };
        let report = status(&sources, since, DEAD_LETTER_LOOK)
            .await
            .map_err(|err| shared::error::report(&err))?;
        cache.insert(window, (Instant::now(), report.clone()));
        Ok(report)
    }
}

/// Text safe inside HTML elements and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1rem;color:#222;max-width:80rem}\
h1{font-size:1.3rem}h2{font-size:1.05rem;margin:1.2rem 0 .3rem}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}\
th,td{padding:.3rem .5rem;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}\
th:first-child,td:first-child,td.text{text-align:left}\
.bad{color:#b00020;font-weight:600}.muted{color:#666;font-size:.9rem}\
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(18rem,1fr));gap:1rem}\
svg{width:100%;height:5rem;background:#f7f7f7}.loaded{fill:#2f6db5}.rejected{fill:#d33}\
nav a{margin-right:.8rem}figure{margin:0}\
@media (max-width:40rem){thead{display:none}table,tbody,tr,td{display:block}\
tr{border-bottom:2px solid #bbb;padding:.3rem 0}td{border:0;padding:.1rem 0;text-align:left}\
td::before{content:attr(data-label) \": \";color:#666}td:first-child{font-weight:600}\
td:first-child::before{content:none}}";

/// The whole page.
pub fn render(report: &StatusReport, window: &str) -> String {
    let mut page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"{}\"><title>Ingestion status</title><style>{STYLE}</style></head><body>\
<h1>Ingestion status</h1><p class=\"muted\">Since <span id=\"since\">{}</span> · at {} (UTC) · refreshes every {} s</p>\
<nav>",
        CACHE_FOR.as_secs(),
        escape(&short_time(Some(&report.since))),
        escape(&short_time(Some(&report.generated_at))),
        CACHE_FOR.as_secs()
    );
    for choice in WINDOWS {
        let mark = if choice == window {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(page, "<a href=\"?since={choice}\"{mark}>{choice}</a>");
    }
    page.push_str("</nav>");
    page.push_str(&queues(report));
    page.push_str(&dataset_table(&report.datasets));
    page.push_str("<h2>Rows over the window</h2><div class=\"charts\">");
    for dataset in &report.datasets {
        page.push_str(&chart(dataset, report));
    }
    page.push_str("</div>");
    page.push_str(&reasons(&report.datasets));
    page.push_str(
        "<p class=\"muted\">Read-only. Row contents are never shown here (values in reasons are \
masked); <code>processor rejects</code> and <code>processor dlq</code> show them to whoever \
holds the warehouse and queue credentials.</p></body></html>",
    );
    page
}

fn queues(report: &StatusReport) -> String {
    let queue = &report.work_queue;
    let oldest = queue
        .oldest_age_seconds
        .map(|s| format!("{s} s"))
        .unwrap_or_else(|| "see CloudWatch".to_owned());
    let dead = &report.dead_letters;
    let dead_text = if dead.configured {
        let class = if dead.depth > 0 { " class=\"bad\"" } else { "" };
        format!("<span id=\"dead-letters\"{class}>{}</span>", dead.depth)
    } else {
        "none configured".to_owned()
    };
    format!(
        "<p>Work queue: <span id=\"waiting\">{}</span> waiting, {} in flight, oldest {oldest} · \
Dead-letter queue: {dead_text}</p>",
        queue.waiting, queue.in_flight
    )
}

fn dataset_table(datasets: &[DatasetStatus]) -> String {
    let mut table = String::from(
        "<div class=\"scroll\"><table><thead><tr><th>Dataset</th><th>Routes</th><th>Files</th>\
<th>File items</th><th>Stream items</th><th>Rows loaded</th><th>Rejected</th><th>Incomplete</th>\
<th>Dead letters</th><th>Lag</th><th>Last load</th></tr></thead><tbody>",
    );
    for d in datasets {
        let a = &d.activity;
        let cell = |field: &str, label: &str, n: u64, flag: bool| {
            let class = if flag && n > 0 { " class=\"bad\"" } else { "" };
            format!("<td data-field=\"{field}\" data-label=\"{label}\"{class}>{n}</td>")
        };
        let _ = write!(
            table,
            "<tr data-dataset=\"{name}\"><td>{name}</td><td class=\"text\" data-label=\"Routes\">{}</td>{}{}{}{}{}{}{}<td class=\"text\" data-field=\"lag\" data-label=\"Lag\">{}</td><td class=\"text\" data-label=\"Last load\">{}</td></tr>",
            d.routes,
            cell("files_completed", "Files", a.files_completed, false),
            cell("file_items", "File items", a.file_items, false),
            cell("stream_items", "Stream items", a.stream_items, false),
            cell("rows_loaded", "Rows loaded", a.rows_loaded, false),
            cell("rows_rejected", "Rejected", a.rows_rejected, true),
            cell("files_incomplete", "Incomplete", a.files_incomplete, true),
            cell("dead_letters", "Dead letters", d.dead_letters, true),
            d.lag_seconds
                .map(|s| format!("{s} s"))
                .unwrap_or_else(|| "—".to_owned()),
            escape(&short_time(d.last_loaded_at.as_deref())),
            name = escape(&a.dataset),
        );
    }
    table.push_str("</tbody></table></div>");
    table
}

/// `2026-12-07T23:13:07.170Z` as `2026-12-07 23:13:07` (UTC, as the header says).
fn short_time(time: Option<&str>) -> String {
    match time {
        Some(time) if time.len() >= 19 => time[..19].replacen('T', " ", 1),
        Some(time) => time.to_owned(),
        None => "—".to_owned(),
    }
}

/// Bars of rows loaded (blue) and rejected (red) per point of the window.
fn chart(dataset: &DatasetStatus, report: &StatusReport) -> String {
    let bucket = report.bucket_ms.max(1);
    let start = report.since_ms;
    let points = usize::try_from((report.generated_at_ms - start) / bucket + 1)
        .unwrap_or(1)
        .clamp(1, 500);
    let highest = dataset
        .activity
        .series
        .iter()
        .map(|p| p.rows_loaded.max(p.rows_rejected))
        .max()
        .unwrap_or(0);
    let width = 100.0 / points as f64;
    let mut bars = String::new();
    for point in &dataset.activity.series {
        let slot = ((point.start_ms - start).max(0) / bucket) as f64;
        for (rows, class, offset) in [
            (point.rows_loaded, "loaded", 0.0),
            (point.rows_rejected, "rejected", width / 2.0),
        ] {
            let height = 100.0 * rows as f64 / highest.max(1) as f64;
            let _ = write!(
                bars,
                "<rect class=\"{class}\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{height:.2}\"><title>{rows} {class}</title></rect>",
                slot * width + offset,
                100.0 - height,
                width / 2.0
            );
        }
    }
    let scale = if highest == 0 {
        "no loads".to_owned()
    } else {
        format!("most {highest} rows per {} min", bucket / 60_000)
    };
    format!(
        "<figure data-chart=\"{name}\"><figcaption>{name} <span class=\"muted\">({scale})</span></figcaption>\
<svg viewBox=\"0 0 100 100\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"rows loaded and rejected over time\">{bars}</svg></figure>",
        name = escape(&dataset.activity.dataset)
    )
}

fn reasons(datasets: &[DatasetStatus]) -> String {
    let mut list = String::new();
    for d in datasets {
        for reason in &d.top_reasons {
            let _ = write!(
                list,
                "<li><b>{}</b>: {}× {}</li>",
                escape(&d.activity.dataset),
                reason.count,
                escape(&reason.reason)
            );
        }
    }
    if list.is_empty() {
        return String::new();
    }
    format!("<h2>Why items were dead-lettered</h2><ul>{list}</ul>")
}
