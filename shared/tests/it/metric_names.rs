//! Every metric the code emits is in the specification (`telemetry::METRICS`): each
//! `counter!`, `gauge!` and `histogram!` in the workspace's sources names its metric by a
//! `telemetry::names` constant whose value is specified with that kind, and uses only the
//! specified label keys. A metric added without its specification fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shared::telemetry::{METRICS, MetricKind};

const CRATES: &[&str] = &["shared", "ingest-batch", "ingest-stream", "processor"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds the crate")
        .to_owned()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("readable source folder")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `NAME` → value of the `telemetry::names` constants.
fn name_constants() -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(workspace().join("shared/src/telemetry.rs")).expect("telemetry.rs");
    let module = text
        .split("pub mod names {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("the names module");
    module
        .lines()
        .filter_map(|line| {
            let line = line.trim().strip_prefix("pub const ")?;
            let (name, rest) = line.split_once(": &str = \"")?;
            Some((name.to_owned(), rest.trim_end_matches("\";").to_owned()))
        })
        .collect()
}

/// One metric macro call: its kind, first argument and label keys.
#[derive(Debug)]
struct Emission {
    at: String,
    kind: MetricKind,
    name_argument: String,
    label_keys: Vec<String>,
}

fn emissions(path: &Path, text: &str) -> Vec<Emission> {
    let mut found = Vec::new();
    for (macro_name, kind) in [
        ("counter!(", MetricKind::Counter),
        ("gauge!(", MetricKind::Gauge),
        ("histogram!(", MetricKind::Histogram),
    ] {
        for (offset, _) in text.match_indices(macro_name) {
            // `describe_counter!(` and the like are not emissions.
            let before = text[..offset].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let args_start = offset + macro_name.len();
            let mut depth = 1;
            let mut end = args_start;
            for (i, c) in text[args_start..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = args_start + i;
                    break;
                }
            }
            let args = &text[args_start..end];
            let name_argument = args.split(',').next().unwrap_or_default().trim().to_owned();
            // Every part before a `=>` ends with a key; the last part is only a value.
            let parts: Vec<&str> = args.split("=>").collect();
            let label_keys = parts[..parts.len() - 1]
                .iter()
                .filter_map(|left| {
                    let key = left.trim_end().rsplit(',').next()?.trim();
                    key.strip_prefix('"')?.strip_suffix('"').map(str::to_owned)
                })
                .collect();
            let line = text[..offset].lines().count();
            found.push(Emission {
                at: format!("{}:{line}", path.display()),
                kind,
                name_argument,
                label_keys,
            });
        }
    }
    found
}

fn problems(emissions: &[Emission], constants: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for emission in emissions {
        let Some(constant) = emission
            .name_argument
            .rsplit("names::")
            .next()
            .filter(|_| emission.name_argument.contains("names::"))
        else {
            problems.push(format!(
                "{}: name the metric with a telemetry::names constant, not {}",
                emission.at, emission.name_argument
            ));
            continue;
        };
        let Some(value) = constants.get(constant) else {
            problems.push(format!("{}: no constant names::{constant}", emission.at));
            continue;
        };
        let Some(spec) = METRICS.iter().find(|spec| spec.name == value) else {
            problems.push(format!(
                "{}: {value} is not in telemetry::METRICS",
                emission.at
            ));
            continue;
        };
        if spec.kind != emission.kind {
            problems.push(format!(
                "{}: {value} is specified as {:?}, emitted as {:?}",
                emission.at, spec.kind, emission.kind
            ));
        }
        for key in &emission.label_keys {
            if !spec.labels.contains(&key.as_str()) {
                problems.push(format!(
                    "{}: {value} has no label {key:?} (specified: {:?})",
                    emission.at, spec.labels
                ));
            }
        }
    }
    problems
}

#[test]
fn every_emitted_metric_is_specified_with_its_kind_and_labels() {
    let constants = name_constants();
    assert_eq!(
        constants.len(),
        METRICS.len(),
        "every names:: constant is specified once: {constants:?}"
    );
    let mut files = Vec::new();
    for krate in CRATES {
        sources(&workspace().join(krate).join("src"), &mut files);
    }
    let mut all = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        all.extend(emissions(file, &text));
    }
    assert!(all.len() >= 15, "the scan found the emissions: {all:?}");
    assert_eq!(problems(&all, &constants), Vec::<String>::new());
}

#[test]
fn an_unspecified_name_kind_or_label_is_caught() {
    let constants = name_constants();
    let code = r#"
        metrics::counter!("ingest_made_up_total").increment(1);
        metrics::gauge!(names::ROWS_LOADED_TOTAL).set(1.0);
        metrics::counter!(names::ROWS_LOADED_TOTAL, "dataset" => "d", "object_key" => k).increment(1);
        metrics::describe_counter!(names::ROWS_LOADED_TOTAL, "not an emission");
    "#;
    let found = emissions(Path::new("example.rs"), code);
    assert_eq!(found.len(), 3, "{found:?}");
    let problems = problems(&found, &constants);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("name the metric with a telemetry::names constant"));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("specified as Counter, emitted as Gauge"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no label \"object_key\""))
    );
}

#[test]
fn the_metrics_page_lists_exactly_the_specified_metrics() {
    let page =
        std::fs::read_to_string(workspace().join("docs/metrics.md")).expect("docs/metrics.md");
    let listed: Vec<&str> = page
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name))
        .collect();
    let mut specified: Vec<&str> = METRICS.iter().map(|spec| spec.name).collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    specified.sort_unstable();
    assert_eq!(
        sorted, specified,
        "docs/metrics.md and telemetry::METRICS differ"
    );
    for spec in METRICS {
        let row = page
            .lines()
            .find(|line| line.starts_with(&format!("| `{}`", spec.name)))
            .expect("listed");
        let kind = format!("{:?}", spec.kind).to_lowercase();
        assert!(
            row.contains(&format!("| {kind} |")),
            "{}: kind {kind}: {row}",
            spec.name
        );
        for label in spec.labels {
            assert!(
                row.contains(&format!("`{label}`")),
                "{}: label {label}: {row}",
                spec.name
            );
        }
    }
}
