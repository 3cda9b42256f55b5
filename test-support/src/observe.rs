//! Reading what the processor and the Lambdas publish: HTTP endpoints, Prometheus text,
//! CloudWatch Embedded Metric Format documents.

/// A plain HTTP/1.1 GET on loopback, for checking the processor's health and metrics
/// endpoint: returns the status code and the body.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|err| panic!("connect to {address}: {err}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// The value of one Prometheus sample in `/metrics` text, e.g.
/// `metric_value(text, "ingest_rows_loaded_total", &[("dataset", "orders")])`; 0 if absent.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")))
        })
        .map_or(0.0, |(_, value)| value.parse().unwrap_or(f64::NAN))
}

/// Checks one Embedded Metric Format document as CloudWatch reads it — the `_aws` directive
/// with the platform's namespace and a timestamp, every metric of the directive specified
/// in `telemetry::METRICS` and present as a number (or, for a histogram, an array of them,
/// returned summed), every dimension present as a string, the `function` dimension — and
/// returns the metric values and the dimension values.
pub fn check_emf(
    line: &str,
    function: &str,
) -> (
    std::collections::BTreeMap<String, f64>,
    std::collections::BTreeMap<String, String>,
) {
    let document: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
    let aws = &document["_aws"];
    assert!(aws["Timestamp"].as_u64().is_some(), "{document}");
    let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
    assert!(!directives.is_empty(), "{document}");
    let mut values = std::collections::BTreeMap::new();
    let mut dimensions = std::collections::BTreeMap::new();
    for directive in directives {
        assert_eq!(
            directive["Namespace"],
            shared::telemetry::CLOUDWATCH_NAMESPACE,
            "{document}"
        );
        for set in directive["Dimensions"].as_array().expect("dimension sets") {
            let set = set.as_array().expect("a dimension set");
            assert!(
                set.iter().any(|d| d == "function"),
                "every set has the function: {document}"
            );
            for name in set {
                let name = name.as_str().expect("dimension name");
                let value = document[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("dimension {name} has a value: {document}"));
                dimensions.insert(name.to_owned(), value.to_owned());
            }
        }
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("metric name");
            assert!(
                shared::telemetry::spec(name).is_some(),
                "{name} is specified in telemetry::METRICS"
            );
            // A number, or an array of numbers (a histogram's observations): summed.
            let value = match &document[name] {
                serde_json::Value::Array(values) => values
                    .iter()
                    .map(|v| v.as_f64().unwrap_or_else(|| panic!("{name}: {document}")))
                    .sum(),
                other => other
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name} has a number: {document}")),
            };
            values.insert(name.to_owned(), value);
        }
    }
    assert_eq!(
        dimensions.get("function").map(String::as_str),
        Some(function)
    );
    (values, dimensions)
}
