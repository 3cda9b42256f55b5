//! Every metric of the platform's own namespace that the stack's dashboard and alarms read
//! (`infra/template.yaml`) is one the code emits: its name is in `telemetry::METRICS`, and
//! every label value the template filters on is a declared label.

use shared::telemetry::{CLOUDWATCH_NAMESPACE, METRICS};

const TEMPLATE: &str = include_str!("../../infra/template.yaml");

/// (metric name, label names) a template reads from the platform's namespace.
fn referenced_metrics(template: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    // Dashboard widgets: ["RedshiftIngest", "name", "label", "value", …, {options}].
    let widget_prefix = format!("[\"{CLOUDWATCH_NAMESPACE}\", ");
    for line in template.lines() {
        let Some(start) = line.find(&widget_prefix) else {
            continue;
        };
        let row = &line[start + 1..];
        let row = &row[..row.find(']').expect("a closed metric row")];
        let strings: Vec<String> = row
            .split(", ")
            .take_while(|part| part.starts_with('"'))
            .map(|part| part.trim_matches('"').to_owned())
            .collect();
        let labels = strings[2..].iter().step_by(2).cloned().collect();
        found.push((strings[1].clone(), labels));
    }
    // Alarms: `Namespace: RedshiftIngest` then `MetricName:` and `Dimensions:` in the block.
    let lines: Vec<&str> = template.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        if line.trim() != format!("Namespace: {CLOUDWATCH_NAMESPACE}") {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[index + 1..]
            .iter()
            .take_while(|l| l.len() - l.trim_start().len() >= indent || l.trim().is_empty())
            .copied()
            .collect();
        let name = block
            .iter()
            .find_map(|l| l.trim().strip_prefix("MetricName: "))
            .expect("an alarm names its metric");
        // `Dimensions: [{ Name: outcome, Value: dead_lettered }]`
        let labels = block
            .iter()
            .filter_map(|l| l.trim().strip_prefix("Dimensions:"))
            .flat_map(|dimensions| dimensions.split("Name: ").skip(1))
            .filter_map(|rest| rest.split(',').next())
            .map(|label| label.trim().to_owned())
            .collect();
        found.push((name.to_owned(), labels));
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
        referenced.len() >= 10,
        "the scan found the dashboard's and alarms' metrics: {referenced:?}"
    );
    assert!(
        referenced
            .iter()
            .any(|(name, labels)| name == "ingest_work_items_processed_total"
                && labels == &["outcome".to_owned()]),
        "the alarm's dimension was read: {referenced:?}"
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
        "Dimensions: [{ Name: outcome, Value: dead_lettered }]",
        "Dimensions: [{ Name: dataset_id, Value: x }]",
    );
    assert_eq!(
        problems(&relabelled).len(),
        1,
        "{:?}",
        problems(&relabelled)
    );
}
