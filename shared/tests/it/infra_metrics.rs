//! Every metric of the platform's own namespace that the stack's dashboard and alarms read
//! (`infra/template.yaml`) is one the code emits: its name is in `telemetry::METRICS`, and
//! every dimension the template reads (besides `function`) is one of its labels.

use shared::telemetry::{CLOUDWATCH_NAMESPACE, METRICS};

const TEMPLATE: &str = include_str!("../../../infra/template.yaml");

/// (metric name, label names) a template reads from the platform's namespace. EMF
/// publishes every metric with `function` (a default dimension) plus its labels as
/// dimensions, so the dashboard reads them with `SEARCH('{RedshiftIngest,dims…}
/// MetricName="…"')` and alarms with Metrics Insights (`SELECT …(name) FROM
/// SCHEMA(RedshiftIngest, dims…)`).
fn referenced_metrics(template: &str) -> Vec<(String, Vec<String>)> {
    let labels_of = |dimensions: &str| -> Vec<String> {
        dimensions
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty() && *d != "function")
            .map(str::to_owned)
            .collect()
    };
    let mut found = Vec::new();
    let search = format!("{{{CLOUDWATCH_NAMESPACE},");
    for (at, _) in template.match_indices(&search) {
        let rest = &template[at + search.len()..];
        let Some((dimensions, after)) = rest.split_once('}') else {
            continue;
        };
        let name = after
            .split("MetricName=\\\"")
            .nth(1)
            .and_then(|n| n.split("\\\"").next())
            .expect("a SEARCH names its metric");
        found.push((name.to_owned(), labels_of(dimensions)));
    }
    let schema = format!("FROM SCHEMA({CLOUDWATCH_NAMESPACE},");
    for line in template.lines() {
        let Some((select, from)) = line.split_once(&schema) else {
            continue;
        };
        let name = select
            .rsplit('(')
            .next()
            .and_then(|n| n.split(')').next())
            .expect("a query selects a metric")
            .trim();
        let dimensions = from.split(')').next().unwrap_or_default();
        found.push((name.to_owned(), labels_of(dimensions)));
    }
    found
}

/// What is wrong with the metrics a template reads: names no code emits, unknown labels.
fn problems(template: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, labels) in referenced_metrics(template) {
        let Some(spec) = METRICS.iter().find(|spec| spec.name == name) else {
            problems.push(format!(
                "{name} is read by the template but no code emits it"
            ));
            continue;
        };
        for label in labels {
            if !spec.labels.contains(&label.as_str()) {
                problems.push(format!(
                    "{name} has no label {label:?} (it has {:?})",
                    spec.labels
                ));
            }
        }
    }
    problems
}

#[test]
fn the_dashboard_and_alarms_read_only_metrics_the_code_emits() {
    let referenced = referenced_metrics(TEMPLATE);
    assert!(
        referenced.len() >= 8,
        "the scan found the dashboard's and alarms' metrics: {referenced:?}"
    );
    assert!(
        referenced
            .iter()
            .any(|(name, labels)| name == "ingest_work_items_processed_total"
                && labels == &["dataset".to_owned(), "outcome".to_owned()]),
        "the alarm's query was read: {referenced:?}"
    );
    assert_eq!(problems(TEMPLATE), Vec::<String>::new());
}

#[test]
fn a_metric_or_label_the_code_does_not_emit_is_caught() {
    let renamed = TEMPLATE.replace("ingest_rows_rejected_total", "ingest_rows_misplaced_total");
    assert_eq!(
        problems(&renamed),
        ["ingest_rows_misplaced_total is read by the template but no code emits it"]
    );
    let relabelled = TEMPLATE.replace(
        "FROM SCHEMA(RedshiftIngest, dataset, function, outcome)",
        "FROM SCHEMA(RedshiftIngest, dataset_id, function, outcome)",
    );
    assert_eq!(
        problems(&relabelled).len(),
        1,
        "{:?}",
        problems(&relabelled)
    );
}
