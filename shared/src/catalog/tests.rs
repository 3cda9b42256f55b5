use super::*;

const EXAMPLE: &str = include_str!("../../../catalog/ecommerce.toml");

fn example() -> Catalog {
    Catalog::from_toml(EXAMPLE, "ecommerce.toml").expect("example catalog is valid")
}

fn issues_of(text: &str) -> Vec<String> {
    match Catalog::from_toml(text, "test") {
        Err(CatalogError::Invalid { issues, .. }) => issues.iter().map(Issue::to_string).collect(),
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn example_catalog_loads_with_every_dataset() {
    let catalog = example();
    let names: Vec<&str> = catalog.datasets().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "customers",
            "order_items",
            "order_status_events",
            "orders",
            "payments"
        ]
    );
    let items = catalog.get("order_items").expect("present");
    assert_eq!(items.key_columns, ["order_id", "line_number"]);
    assert_eq!(items.columns[4].data_type, DataType::Decimal128(12, 2));
    assert!(items.has_transform());
    let events = catalog.get("order_status_events").expect("present");
    assert!(events.key_columns.is_empty());
    assert_eq!(events.format, FileFormat::Jsonl);
    assert_eq!(
        events.reject_limit,
        RejectLimit {
            rows: 100,
            share_ppm: None
        }
    );
    assert_eq!(
        catalog.get("orders").expect("present").reject_limit,
        DEFAULT_REJECT_LIMIT
    );
    assert_eq!(catalog.streams(), ["order-events"]);
}

#[test]
fn every_error_is_listed_with_its_path() {
    let text = r#"
[datasets.orders]
format = "csvv"
target = "sales"
key = ["order_id", "missing"]
reject_limit = -1
colour = "blue"
s3 = { prefix = "landing/orders/" }

[[datasets.orders.columns]]
name = "order_id"
type = "int64"

[[datasets.orders.columns]]
name = "Order Date"
type = "date"

[[datasets.orders.columns]]
name = "_ingest_source"
type = "string"

[[datasets.orders.columns]]
name = "amount"
type = "strin"

[datasets.events]
target = "events.status"
"#;
    assert_eq!(
        issues_of(text),
        [
            "datasets.events: dataset has no source: add an [s3] route (prefix/suffix), a [stream] route, or both",
            "datasets.events.columns: required: list the input columns as [[datasets.NAME.columns]] tables",
            "datasets.orders.format: unknown format \"csvv\"; expected one of csv, jsonl, parquet",
            "datasets.orders.columns[1].name: \"Order Date\" is not a valid identifier: use lower-case letters, digits and _, not starting with a digit",
            "datasets.orders.columns[2].name: \"_ingest_source\" uses the reserved prefix \"_ingest_\"",
            "datasets.orders.columns[3].type: unknown type \"strin\"; expected one of string, boolean, int16, int32, int64, float32, float64, date, timestamp, timestamptz, decimal(p,s)",
            "datasets.orders.target: target \"sales\" must be written schema.table",
            "datasets.orders.key[0]: key column \"order_id\" must be declared nullable = false",
            "datasets.orders.key[1]: key column \"missing\" is not a column of the dataset",
            "datasets.orders.reject_limit: -1 is negative; expected a count (1000), a share (\"2%\") or both (\"2% or 1000\")",
            "datasets.orders.colour: unknown field; expected one of: columns, compression, csv, description, format, key, redshift, reject_limit, s3, schema_contract, stream, target, transform, unknown_columns",
        ]
    );
}

#[test]
fn error_message_counts_and_lists_the_issues() {
    let err = Catalog::from_toml("[datasets.x]\n", "my.toml").expect_err("invalid");
    let text = crate::error::report(&err);
    assert!(
        text.starts_with("catalog my.toml has 3 error(s):\n  - datasets.x:"),
        "{text}"
    );
    assert!(
        text.contains("datasets.x.target: required field is missing"),
        "{text}"
    );
}

#[test]
fn syntax_errors_name_the_origin_and_line() {
    let err = Catalog::from_toml("[datasets.x\n", "broken.toml").expect_err("invalid");
    let text = crate::error::report(&err);
    assert!(
        text.starts_with("catalog broken.toml is not valid TOML"),
        "{text}"
    );
    assert!(text.contains("line 1"), "{text}");
}

#[test]
fn empty_and_misshapen_catalogs_are_errors() {
    assert_eq!(
        issues_of(""),
        ["datasets: the catalog defines no datasets; add a [datasets.NAME] table"]
    );
    assert_eq!(
        issues_of("datasets = 3\nversion = 1\n"),
        [
            "version: unknown field; expected one of: datasets",
            "datasets: expected a table, found an integer",
        ]
    );
}

#[test]
fn csv_options_and_compression_are_validated() {
    let text = r#"
[datasets.a]
format = "parquet"
compression = "gzip"
target = "s.a"
s3 = { prefix = "a/" }
csv = { delimiter = ",," }
columns = [{ name = "x", type = "int64" }]
"#;
    assert_eq!(
        issues_of(text),
        [
            "datasets.a.compression: parquet compresses inside the file; whole-file compression must be none",
            "datasets.a.csv: csv options are only allowed when format = \"csv\"",
            "datasets.a.csv.delimiter: expected one ASCII character (not a newline), found \",,\"",
        ]
    );
    let ok = r#"
[datasets.a]
format = "csv"
target = "s.a"
s3 = { prefix = "a/" }
csv = { delimiter = "\\t", header = false, quote = "'" }
columns = [{ name = "x", type = "int64" }]
"#;
    let catalog = Catalog::from_toml(ok, "ok").expect("valid");
    let csv = catalog.get("a").expect("present").csv;
    assert_eq!(
        (csv.delimiter, csv.quote, csv.has_header),
        (b'\t', b'\'', false)
    );
}

#[test]
fn identical_routes_are_refused() {
    let text = r#"
[datasets.a]
format = "csv"
target = "s.a"
s3 = { prefix = "in/" }
stream = { name = "events" }
columns = [{ name = "x", type = "int64" }]

[datasets.b]
format = "csv"
target = "s.b"
s3 = { prefix = "in/" }
stream = { name = "events" }
columns = [{ name = "x", type = "int64" }]
"#;
    assert_eq!(
        issues_of(text),
        [
            "datasets.b.s3: same s3 route as dataset \"a\": objects could not be routed",
            "datasets.b.stream: same stream route as dataset \"a\": give one a different discriminator",
        ]
    );
}

#[test]
fn objects_route_to_the_most_specific_prefix() {
    let text = r#"
[datasets.all_orders]
format = "csv"
target = "s.a"
s3 = { prefix = "landing/orders/" }
columns = [{ name = "x", type = "int64" }]

[datasets.eu_orders]
format = "csv"
target = "s.b"
s3 = { prefix = "landing/orders/eu/", suffix = ".csv.gz" }
columns = [{ name = "x", type = "int64" }]
"#;
    let catalog = Catalog::from_toml(text, "t").expect("valid");
    let route = |key: &str| catalog.route_object(key).map(|d| d.name.as_str());
    assert_eq!(
        route("landing/orders/eu/2024 été.csv.gz"),
        Some("eu_orders")
    );
    assert_eq!(route("landing/orders/eu/2024.csv"), Some("all_orders"));
    assert_eq!(route("landing/orders/us/1.csv"), Some("all_orders"));
    assert_eq!(route("landing/customers/1.csv"), None);
    assert_eq!(route("landing/orders"), None);
}

#[test]
fn records_route_by_stream_and_discriminator() {
    let text = r#"
[datasets.status]
target = "e.status"
stream = { name = "orders", discriminator = { field = "type", value = "status" } }
columns = [{ name = "x", type = "int64" }]

[datasets.numbered]
target = "e.numbered"
stream = { name = "orders", discriminator = { field = "type", value = "7" } }
columns = [{ name = "x", type = "int64" }]

[datasets.other]
target = "e.other"
stream = { name = "orders" }
columns = [{ name = "x", type = "int64" }]
"#;
    let catalog = Catalog::from_toml(text, "t").expect("valid");
    let route = |stream: &str, record: serde_json::Value| {
        catalog
            .route_record(stream, &record)
            .map(|d| d.name.clone())
    };
    assert_eq!(
        route("orders", serde_json::json!({"type": "status"})),
        Some("status".into())
    );
    assert_eq!(
        route("orders", serde_json::json!({"type": 7})),
        Some("numbered".into())
    );
    assert_eq!(
        route("orders", serde_json::json!({"type": "refund"})),
        Some("other".into())
    );
    assert_eq!(
        route("orders", serde_json::json!([1, 2])),
        Some("other".into())
    );
    assert_eq!(
        route("payments", serde_json::json!({"type": "status"})),
        None
    );
}

#[test]
fn compression_is_inferred_from_the_extension_unless_given() {
    let catalog = example();
    let customers = catalog.get("customers").expect("present");
    assert_eq!(
        customers.compression_for("landing/customers/a.csv"),
        Compression::None
    );
    assert_eq!(
        customers.compression_for("landing/customers/a.csv.GZ"),
        Compression::Gzip
    );
    assert_eq!(
        customers.compression_for("landing/customers/a.csv.zst"),
        Compression::Zstd
    );
    let mut explicit = customers.clone();
    explicit.compression = Some(Compression::Zstd);
    assert_eq!(
        explicit.compression_for("landing/customers/a.csv"),
        Compression::Zstd
    );
}

#[test]
fn types_parse_to_arrow_and_back() {
    for name in [
        "string",
        "boolean",
        "int16",
        "int32",
        "int64",
        "float32",
        "float64",
        "date",
        "timestamp",
        "timestamptz",
        "decimal(10,2)",
    ] {
        let parsed = parse_type(name).expect("known type");
        assert_eq!(type_label(&parsed), name);
    }
    assert_eq!(parse_type("BIGINT"), Ok(DataType::Int64));
    assert!(
        parse_type("decimal(39,2)")
            .expect_err("too wide")
            .contains("precision must be 1 to 38")
    );
    assert!(parse_type("decimal(5,6)").is_err());
    assert!(
        parse_type("decimal(a,b)")
            .expect_err("not numbers")
            .contains("integer precision")
    );
}

#[test]
fn identifiers_are_strict() {
    assert!(check_identifier("order_items_2").is_ok());
    assert!(check_identifier("_x").is_ok());
    for bad in [
        "",
        "1abc",
        "Orders",
        "a-b",
        "a b",
        "a\"b",
        "a;drop",
        "été",
        &"a".repeat(128),
    ] {
        assert!(check_identifier(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn redshift_layout_defaults_to_the_merge_key_and_can_be_set() {
    let catalog = example();
    let items = catalog.get("order_items").expect("present");
    assert_eq!(
        items.redshift,
        RedshiftLayout {
            distribution: Distribution::Key("order_id".into()),
            sort_key: vec!["order_id".into(), "line_number".into()],
        }
    );
    let events = catalog.get("order_status_events").expect("present");
    assert_eq!(events.redshift, RedshiftLayout::default());

    let text = r#"
[datasets.notes]
format = "csv"
target = "s.notes"
key = ["id"]
s3 = { prefix = "notes/" }
redshift = { dist_style = "even", sort_key = ["day", "id"] }
columns = [
  { name = "id", type = "int64", nullable = false },
  { name = "day", type = "date" },
  { name = "body", type = "string", max_length = 65535 },
  { name = "tag", type = "string" },
  { name = "note", type = "string", max_length = 40, too_long = "truncate" },
]
"#;
    let notes = Catalog::from_toml(text, "test").expect("valid");
    let notes = notes.get("notes").expect("present");
    assert_eq!(notes.redshift.distribution, Distribution::Even);
    assert_eq!(notes.redshift.sort_key, ["day", "id"]);
    assert_eq!(notes.max_length("body"), MAX_VARCHAR_BYTES);
    assert_eq!(notes.max_length("tag"), DEFAULT_MAX_LENGTH);
    assert_eq!(notes.too_long("note"), TooLong::Truncate);
    assert_eq!(notes.too_long("tag"), TooLong::Reject);
}

#[test]
fn redshift_layout_mistakes_are_listed() {
    let text = r#"
[datasets.notes]
format = "csv"
target = "s.notes"
s3 = { prefix = "notes/" }
redshift = { dist_style = "round robin", sort_key = ["missing"] }
columns = [
  { name = "id", type = "int64", max_length = 10, too_long = "truncate" },
  { name = "body", type = "string", max_length = 70000, too_long = "cut" },
]

[datasets.other]
format = "csv"
target = "s.other"
s3 = { prefix = "other/" }
redshift = { dist_style = "key" }
columns = [{ name = "id", type = "int64" }]
"#;
    let issues = issues_of(text);
    let expected = [
        "unknown dist_style \"round robin\"",
        "\"missing\" is not a column of the dataset",
        "max_length applies to string columns only",
        "too_long applies to string columns only",
        "\"cut\" is not a choice; expected \"reject\" or \"truncate\"",
        "70000 is out of range; expected 1 to 65535",
        "dist_style = \"key\" needs a dist_key",
    ];
    for text in expected {
        assert!(
            issues.iter().any(|i| i.contains(text)),
            "{text} not in {issues:#?}"
        );
    }
}
