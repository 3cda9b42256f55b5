//! The dataset catalog: what each dataset is, where its data comes from and where it goes.
//!
//! A catalog is a TOML document with one `[datasets.NAME]` table per dataset (see
//! `catalog/ecommerce.toml` for a complete example). Loading checks everything it can
//! without running a query and reports *every* problem with its path, e.g.
//! `datasets.orders.columns[3].type: unknown type "strin"`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::error::{Classify, Retryability};
use crate::toml_walk::{Fields, Issues, join_path, type_name};
pub use crate::toml_walk::{Issue, render_issues};
pub use redshift::{DEFAULT_MAX_LENGTH, Distribution, MAX_VARCHAR_BYTES, RedshiftLayout, TooLong};
pub use reject_limit::{DEFAULT_REJECT_LIMIT, RejectLimit};

mod redshift;
mod reject_limit;

/// Names starting with this prefix are reserved for the columns the platform adds
/// (lineage, load time).
pub const RESERVED_COLUMN_PREFIX: &str = "_ingest_";

/// Redshift's identifier limit, in bytes.
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 127;

/// The transform applied when a dataset names none.
pub(crate) const DEFAULT_TRANSFORM_SQL: &str = "SELECT * FROM input";

/// What may happen to a dataset's target table when the catalog changes (dlt's schema
/// contracts): `evolve` adds columns and makes safe widenings; `freeze` refuses any change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaContract {
    #[default]
    Evolve,
    Freeze,
}

impl SchemaContract {
    pub const NAMES: &'static str = "evolve, freeze";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "evolve" => Some(Self::Evolve),
            "freeze" => Some(Self::Freeze),
            _ => None,
        }
    }
}

/// What happens to a field the catalog does not name: a CSV header's extra column or a
/// JSON object's extra key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownColumns {
    /// Not loaded (the catalog says what is loaded).
    #[default]
    Ignore,
    /// A CSV file whose header has one fails as a whole, naming them; a JSON row with one
    /// is rejected with the keys.
    Reject,
}

impl UnknownColumns {
    pub const NAMES: &'static str = "ignore, reject";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ignore" => Some(Self::Ignore),
            "reject" => Some(Self::Reject),
            _ => None,
        }
    }
}

/// How a file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Csv,
    Jsonl,
    Parquet,
}

impl FileFormat {
    pub const NAMES: &'static str = "csv, jsonl, parquet";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" | "json_lines" => Some(Self::Jsonl),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
            Self::Parquet => "parquet",
        }
    }
}

/// How a file is compressed as a whole (Parquet compresses inside the file: `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub const NAMES: &'static str = "none, gzip, zstd";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "none" => Some(Self::None),
            "gzip" | "gz" => Some(Self::Gzip),
            "zstd" | "zst" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// Infers the compression from an object key's extension (`.gz`, `.zst`, `.zstd`).
    pub fn from_key(key: &str) -> Self {
        let lower = key.to_ascii_lowercase();
        if lower.ends_with(".gz") || lower.ends_with(".gzip") {
            Self::Gzip
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Self::Zstd
        } else {
            Self::None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// CSV layout options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
    pub has_header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: b',',
            quote: b'"',
            escape: None,
            has_header: true,
        }
    }
}

/// A `schema.table` name in the warehouse; both parts are validated identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// One input column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
    /// The most bytes a string column holds in a warehouse that sizes strings (Redshift);
    /// `None`: [`DEFAULT_MAX_LENGTH`].
    pub max_length: Option<u32>,
    /// What happens to a longer string there.
    pub too_long: TooLong,
}

/// Objects whose key starts with `prefix` and ends with `suffix` belong to the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Route {
    pub prefix: String,
    pub suffix: String,
}

impl S3Route {
    pub fn matches(&self, key: &str) -> bool {
        key.len() >= self.prefix.len() + self.suffix.len()
            && key.starts_with(&self.prefix)
            && key.ends_with(&self.suffix)
    }
}

/// Records of `stream` belong to the dataset; with a discriminator, only those whose
/// top-level `field` equals `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRoute {
    pub stream: String,
    pub discriminator: Option<Discriminator>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discriminator {
    pub field: String,
    pub value: String,
}

impl Discriminator {
    /// Whether a JSON record carries the discriminating value. Numbers and booleans are
    /// compared by their JSON text, so `value = "3"` matches `{"type": 3}`.
    pub fn matches(&self, record: &serde_json::Value) -> bool {
        match record.get(&self.field) {
            Some(serde_json::Value::String(s)) => *s == self.value,
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                // Compare the JSON text: a Value never equals a String when it is a number.
                let text = v.to_string();
                text == self.value
            }
            _ => false,
        }
    }
}

/// One dataset: its sources, its input schema, its transform and its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub description: Option<String>,
    /// Layout of files; stream datasets carry JSON records and use `jsonl`.
    pub format: FileFormat,
    /// `None`: inferred from each object's extension.
    pub compression: Option<Compression>,
    pub csv: CsvOptions,
    pub columns: Vec<Column>,
    /// SQL over a table named `input`.
    pub transform_sql: String,
    pub target: TableName,
    /// Merge keys; empty means append (idempotent through the lineage columns).
    pub key_columns: Vec<String>,
    /// Bad rows a work item may have before it fails as a whole.
    pub reject_limit: RejectLimit,
    /// What may change in the target table when the catalog changes.
    pub schema_contract: SchemaContract,
    /// What happens to input fields the catalog does not name.
    pub unknown_columns: UnknownColumns,
    pub s3: Option<S3Route>,
    pub stream: Option<StreamRoute>,
    /// The table's layout on Redshift.
    pub redshift: RedshiftLayout,
}

impl Dataset {
    /// The most bytes output column `name` holds on Redshift: the input column's
    /// `max_length`, else [`DEFAULT_MAX_LENGTH`].
    pub fn max_length(&self, name: &str) -> u32 {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.max_length)
            .unwrap_or(DEFAULT_MAX_LENGTH)
    }

    /// What the Redshift sink does with a value of output column `name` longer than
    /// [`Dataset::max_length`].
    pub fn too_long(&self, name: &str) -> TooLong {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.too_long)
            .unwrap_or_default()
    }

    /// The input schema as Arrow sees it.
    pub fn input_schema(&self) -> Schema {
        Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable))
                .collect::<Vec<_>>(),
        )
    }

    /// The compression of one object of this dataset.
    pub fn compression_for(&self, key: &str) -> Compression {
        self.compression
            .unwrap_or_else(|| Compression::from_key(key))
    }

    pub fn has_transform(&self) -> bool {
        self.transform_sql != DEFAULT_TRANSFORM_SQL
    }
}

/// All datasets, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    datasets: BTreeMap<String, Dataset>,
}

/// Why a catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("catalog {origin} is not valid TOML")]
    Syntax {
        origin: String,
        source: toml::de::Error,
    },
    #[error("catalog {origin} has {} error(s):\n{}", issues.len(), render_issues(issues))]
    Invalid { origin: String, issues: Vec<Issue> },
}

impl Classify for CatalogError {
    fn retryability(&self) -> Retryability {
        Retryability::Permanent
    }
}

impl Catalog {
    pub fn from_file(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates a catalog; `origin` names it in errors (a path or a label).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, CatalogError> {
        let document: Table =
            text.parse()
                .map_err(|source: toml::de::Error| CatalogError::Syntax {
                    origin: origin.to_owned(),
                    source,
                })?;
        let mut issues = Issues::default();
        let catalog = read_catalog(&document, &mut issues);
        if issues.is_empty() {
            Ok(catalog)
        } else {
            Err(CatalogError::Invalid {
                origin: origin.to_owned(),
                issues: issues.into_vec(),
            })
        }
    }

    pub fn get(&self, name: &str) -> Option<&Dataset> {
        self.datasets.get(name)
    }

    pub fn datasets(&self) -> impl Iterator<Item = &Dataset> {
        self.datasets.values()
    }

    pub fn len(&self) -> usize {
        self.datasets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datasets.is_empty()
    }

    /// The dataset an object key belongs to: among matching routes, the longest prefix
    /// wins, then the longest suffix (identical routes are refused at load time).
    pub fn route_object(&self, key: &str) -> Option<&Dataset> {
        self.datasets
            .values()
            .filter(|d| d.s3.as_ref().is_some_and(|route| route.matches(key)))
            .max_by_key(|d| {
                let route = d.s3.as_ref().expect("filtered on s3 route");
                (route.prefix.len(), route.suffix.len())
            })
    }

    /// The dataset a stream record belongs to: a route whose discriminator matches wins
    /// over the stream's route without one.
    pub fn route_record(&self, stream: &str, record: &serde_json::Value) -> Option<&Dataset> {
        let mut fallback = None;
        for dataset in self.datasets.values() {
            let Some(route) = dataset.stream.as_ref().filter(|r| r.stream == stream) else {
                continue;
            };
            match &route.discriminator {
                Some(discriminator) if discriminator.matches(record) => return Some(dataset),
                Some(_) => {}
                None => fallback = Some(dataset),
            }
        }
        fallback
    }

    /// The names of the streams some dataset reads.
    pub fn streams(&self) -> Vec<&str> {
        let mut streams: Vec<&str> = self
            .datasets
            .values()
            .filter_map(|d| d.stream.as_ref().map(|r| r.stream.as_str()))
            .collect();
        streams.sort_unstable();
        streams.dedup();
        streams
    }
}

/// Checks an identifier for the warehouse: lower-case ASCII letters, digits and `_`,
/// not starting with a digit, at most 127 bytes. Lower case because Redshift folds
/// unquoted names to lower case; a stricter rule here avoids surprises there.
pub fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("must not be empty".into());
    };
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "{name:?} is longer than {MAX_IDENTIFIER_BYTES} bytes"
        ));
    }
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !(first.is_ascii_lowercase() || first == '_') || !valid_rest {
        return Err(format!(
            "{name:?} is not a valid identifier: use lower-case letters, digits and _, not starting with a digit"
        ));
    }
    Ok(())
}

/// The column types a catalog may name, as written in the catalog.
pub(crate) const TYPE_NAMES: &str = "string, boolean, int16, int32, int64, float32, float64, date, timestamp, timestamptz, decimal(p,s)";

/// Parses a catalog column type into an Arrow type.
pub(crate) fn parse_type(text: &str) -> Result<DataType, String> {
    let normalized = text.trim().to_ascii_lowercase();
    let data_type = match normalized.as_str() {
        "string" | "utf8" | "text" | "varchar" => DataType::Utf8,
        "boolean" | "bool" => DataType::Boolean,
        "int16" | "smallint" => DataType::Int16,
        "int32" | "int" | "integer" => DataType::Int32,
        "int64" | "bigint" => DataType::Int64,
        "float32" | "real" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        other => {
            return parse_decimal(other)
                .ok_or_else(|| format!("unknown type {text:?}; expected one of {TYPE_NAMES}"))?;
        }
    };
    Ok(data_type)
}

fn parse_decimal(text: &str) -> Option<Result<DataType, String>> {
    let inner = text.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (precision, scale) = inner.split_once(',')?;
    let (Ok(precision), Ok(scale)) = (precision.trim().parse::<u8>(), scale.trim().parse::<i8>())
    else {
        return Some(Err(format!(
            "decimal {text:?} needs integer precision and scale"
        )));
    };
    if !(1..=38).contains(&precision) || scale < 0 || scale as u8 > precision {
        return Some(Err(format!(
            "decimal {text:?}: precision must be 1 to 38 and scale 0 to the precision"
        )));
    }
    Some(Ok(DataType::Decimal128(precision, scale)))
}

/// The catalog name of an Arrow type (the inverse of [`parse_type`]).
pub fn type_label(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        other => other.to_string(),
    }
}

fn read_catalog(document: &Table, issues: &mut Issues) -> Catalog {
    let mut datasets = BTreeMap::new();
    for key in document.keys().filter(|k| k.as_str() != "datasets") {
        issues.push(key.clone(), "unknown field; expected one of: datasets");
    }
    match document.get("datasets") {
        Some(Value::Table(entries)) if !entries.is_empty() => {
            for (name, value) in entries {
                let dataset_path = join_path("datasets", name);
                let Value::Table(table) = value else {
                    issues.push(
                        dataset_path,
                        format!("expected a table, found {}", type_name(value)),
                    );
                    continue;
                };
                if let Err(message) = check_identifier(name) {
                    issues.push(dataset_path.clone(), format!("dataset name {message}"));
                }
                if let Some(dataset) = read_dataset(name, Fields::new(dataset_path, table), issues)
                {
                    datasets.insert(name.clone(), dataset);
                }
            }
        }
        Some(Value::Table(_)) | None => {
            issues.push(
                "datasets",
                "the catalog defines no datasets; add a [datasets.NAME] table",
            );
        }
        Some(other) => {
            issues.push(
                "datasets",
                format!("expected a table, found {}", type_name(other)),
            );
        }
    }
    let catalog = Catalog { datasets };
    check_routes(&catalog, issues);
    catalog
}

fn read_dataset(name: &str, mut fields: Fields<'_>, issues: &mut Issues) -> Option<Dataset> {
    let errors_before = issues.len();
    let description = fields.string("description", issues).map(str::to_owned);
    let s3 = fields
        .table("s3", issues)
        .map(|route| read_s3_route(route, issues));
    let stream = fields
        .table("stream", issues)
        .and_then(|route| read_stream_route(route, issues));
    if s3.is_none() && stream.is_none() && !fields.contains("s3") && !fields.contains("stream") {
        issues.push(
            fields.path(),
            "dataset has no source: add an [s3] route (prefix/suffix), a [stream] route, or both",
        );
    }
    let format = read_format(&mut fields, s3.is_some(), stream.is_some(), issues);
    let compression = read_compression(&mut fields, format, issues);
    let csv = read_csv_options(&mut fields, format, issues);
    let columns = read_columns(&mut fields, issues);
    let transform_sql = read_transform(&mut fields, issues);
    let target = fields.required_string("target", issues).and_then(|text| {
        parse_table_name(text)
            .map_err(|m| issues.push(fields.path_of("target"), m))
            .ok()
    });
    let key_columns: Vec<String> = fields
        .string_array("key", issues)
        .unwrap_or_default()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let plain = transform_sql == DEFAULT_TRANSFORM_SQL;
    check_key_columns(&fields, &key_columns, &columns, plain, issues);
    let redshift = redshift::read_layout(&mut fields, &key_columns, issues);
    // Defaults follow the key, which is checked above.
    if plain && fields.contains("redshift") {
        redshift::check_layout_columns(&fields, &redshift, &columns, issues);
    }
    let reject_limit = RejectLimit::read(&mut fields, issues).unwrap_or(DEFAULT_REJECT_LIMIT);
    let schema_contract = read_choice(
        &mut fields,
        "schema_contract",
        issues,
        SchemaContract::parse,
        SchemaContract::NAMES,
    );
    let unknown_columns = read_choice(
        &mut fields,
        "unknown_columns",
        issues,
        UnknownColumns::parse,
        UnknownColumns::NAMES,
    );
    fields.finish(issues);
    if issues.len() > errors_before {
        return None;
    }
    Some(Dataset {
        name: name.to_owned(),
        description,
        format: format?,
        compression,
        csv,
        columns,
        transform_sql,
        target: target?,
        key_columns,
        reject_limit,
        schema_contract,
        unknown_columns,
        s3,
        stream,
        redshift,
    })
}

/// One of a setting's named values, its default when absent.
fn read_choice<T: Default>(
    fields: &mut Fields<'_>,
    key: &'static str,
    issues: &mut Issues,
    parse: fn(&str) -> Option<T>,
    names: &str,
) -> T {
    let Some(text) = fields.string(key, issues) else {
        return T::default();
    };
    parse(text).unwrap_or_else(|| {
        issues.push(
            fields.path_of(key),
            format!("unknown value {text:?}; expected one of {names}"),
        );
        T::default()
    })
}

fn read_s3_route(mut route: Fields<'_>, issues: &mut Issues) -> S3Route {
    let prefix = route
        .string("prefix", issues)
        .unwrap_or_default()
        .to_owned();
    let suffix = route
        .string("suffix", issues)
        .unwrap_or_default()
        .to_owned();
    if prefix.is_empty() && suffix.is_empty() {
        issues.push(route.path(), "an s3 route needs a prefix, a suffix or both");
    }
    route.finish(issues);
    S3Route { prefix, suffix }
}

fn read_stream_route(mut route: Fields<'_>, issues: &mut Issues) -> Option<StreamRoute> {
    let stream_name = route.required_string("name", issues).map(str::to_owned);
    let discriminator = route.table("discriminator", issues).and_then(|mut d| {
        let field = d.required_string("field", issues).map(str::to_owned);
        let value = d.required_string("value", issues).map(str::to_owned);
        d.finish(issues);
        Some(Discriminator {
            field: field?,
            value: value?,
        })
    });
    route.finish(issues);
    Some(StreamRoute {
        stream: stream_name?,
        discriminator,
    })
}

/// The file format: required with an s3 route, JSON lines for a stream-only dataset.
fn read_format(
    fields: &mut Fields<'_>,
    has_s3: bool,
    has_stream: bool,
    issues: &mut Issues,
) -> Option<FileFormat> {
    let format = match fields.string("format", issues) {
        Some(text) => FileFormat::parse(text).or_else(|| {
            let message = format!(
                "unknown format {text:?}; expected one of {}",
                FileFormat::NAMES
            );
            issues.push(fields.path_of("format"), message);
            None
        }),
        None if has_s3 => {
            let message = format!(
                "required for a dataset with an s3 route; one of {}",
                FileFormat::NAMES
            );
            issues.push(fields.path_of("format"), message);
            None
        }
        None => Some(FileFormat::Jsonl),
    };
    if has_stream && format.is_some_and(|f| f != FileFormat::Jsonl) && !has_s3 {
        issues.push(
            fields.path_of("format"),
            "a stream-only dataset carries JSON records: use jsonl",
        );
    }
    format
}

/// Whole-file compression, when the catalog names one (else it follows the key).
fn read_compression(
    fields: &mut Fields<'_>,
    format: Option<FileFormat>,
    issues: &mut Issues,
) -> Option<Compression> {
    let compression = fields.string("compression", issues).and_then(|text| {
        let parsed = Compression::parse(text);
        if parsed.is_none() {
            let message = format!(
                "unknown compression {text:?}; expected one of {}",
                Compression::NAMES
            );
            issues.push(fields.path_of("compression"), message);
        }
        parsed
    });
    if format == Some(FileFormat::Parquet) && compression.is_some_and(|c| c != Compression::None) {
        issues.push(
            fields.path_of("compression"),
            "parquet compresses inside the file; whole-file compression must be none",
        );
    }
    compression
}

/// The transform SQL, or the default that loads the input as it is.
fn read_transform(fields: &mut Fields<'_>, issues: &mut Issues) -> String {
    match fields.string("transform", issues) {
        Some(sql) if sql.trim().is_empty() => {
            issues.push(
                fields.path_of("transform"),
                "transform SQL is empty; leave it out to load the input as it is",
            );
            DEFAULT_TRANSFORM_SQL.to_owned()
        }
        Some(sql) => sql.trim().to_owned(),
        None => DEFAULT_TRANSFORM_SQL.to_owned(),
    }
}

fn read_csv_options(
    fields: &mut Fields<'_>,
    format: Option<FileFormat>,
    issues: &mut Issues,
) -> CsvOptions {
    let mut options = CsvOptions::default();
    let Some(mut csv) = fields.table("csv", issues) else {
        return options;
    };
    if format.is_some_and(|f| f != FileFormat::Csv) {
        issues.push(
            csv.path(),
            "csv options are only allowed when format = \"csv\"",
        );
    }
    let single_byte =
        |csv: &mut Fields<'_>, key: &'static str, issues: &mut Issues| -> Option<u8> {
            let text = csv.string(key, issues)?;
            let text = if text == "\\t" { "\t" } else { text };
            match text.as_bytes() {
                [byte] if byte.is_ascii() && *byte != b'\n' && *byte != b'\r' => Some(*byte),
                _ => {
                    issues.push(
                        csv.path_of(key),
                        format!("expected one ASCII character (not a newline), found {text:?}"),
                    );
                    None
                }
            }
        };
    if let Some(delimiter) = single_byte(&mut csv, "delimiter", issues) {
        options.delimiter = delimiter;
    }
    if let Some(quote) = single_byte(&mut csv, "quote", issues) {
        options.quote = quote;
    }
    options.escape = single_byte(&mut csv, "escape", issues);
    if let Some(header) = csv.boolean("header", issues) {
        options.has_header = header;
    }
    if options.delimiter == options.quote {
        issues.push(csv.path(), "delimiter and quote must differ");
    }
    csv.finish(issues);
    options
}

fn read_columns(fields: &mut Fields<'_>, issues: &mut Issues) -> Vec<Column> {
    let path = fields.path_of("columns");
    let Some(items) = fields.array("columns", issues) else {
        if !fields.contains("columns") {
            issues.push(
                path,
                "required: list the input columns as [[datasets.NAME.columns]] tables",
            );
        }
        return Vec::new();
    };
    if items.is_empty() {
        issues.push(path.clone(), "a dataset needs at least one column");
    }
    let mut columns: Vec<Column> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let column_path = format!("{path}[{index}]");
        let Value::Table(table) = item else {
            issues.push(
                column_path,
                format!("expected a table, found {}", type_name(item)),
            );
            continue;
        };
        let mut column = Fields::new(column_path, table);
        let name = column.required_string("name", issues).and_then(|name| {
            let checked = check_identifier(name)
                .and_then(|()| {
                    if name.starts_with(RESERVED_COLUMN_PREFIX) {
                        Err(format!(
                            "{name:?} uses the reserved prefix {RESERVED_COLUMN_PREFIX:?}"
                        ))
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| {
                    if columns.iter().any(|c| c.name == name) {
                        Err(format!("duplicate column {name:?}"))
                    } else {
                        Ok(())
                    }
                });
            checked
                .map_err(|m| issues.push(column.path_of("name"), m))
                .ok()
                .map(|()| name.to_owned())
        });
        let data_type = column.required_string("type", issues).and_then(|text| {
            parse_type(text)
                .map_err(|m| issues.push(column.path_of("type"), m))
                .ok()
        });
        let nullable = column.boolean("nullable", issues).unwrap_or(true);
        let max_length = column
            .integer_in("max_length", 1..=i64::from(MAX_VARCHAR_BYTES), issues)
            .and_then(|n| u32::try_from(n).ok());
        let too_long = column.string("too_long", issues).and_then(|text| {
            TooLong::parse(text)
                .map_err(|m| issues.push(column.path_of("too_long"), m))
                .ok()
        });
        let not_a_string = data_type.as_ref().is_some_and(|t| *t != DataType::Utf8);
        for (key, set) in [
            ("max_length", max_length.is_some()),
            ("too_long", too_long.is_some()),
        ] {
            if set && not_a_string {
                issues.push(
                    column.path_of(key),
                    format!("{key} applies to string columns only"),
                );
            }
        }
        column.finish(issues);
        if let (Some(name), Some(data_type)) = (name, data_type) {
            columns.push(Column {
                name,
                data_type,
                nullable,
                max_length,
                too_long: too_long.unwrap_or_default(),
            });
        }
    }
    columns
}

fn check_key_columns(
    fields: &Fields<'_>,
    key_columns: &[String],
    columns: &[Column],
    plain_input: bool,
    issues: &mut Issues,
) {
    let path = fields.path_of("key");
    for (index, key) in key_columns.iter().enumerate() {
        if let Err(message) = check_identifier(key) {
            issues.push(format!("{path}[{index}]"), message);
            continue;
        }
        if key_columns[..index].contains(key) {
            issues.push(
                format!("{path}[{index}]"),
                format!("duplicate key column {key:?}"),
            );
        }
        // With a transform the output columns are only known once the SQL is planned;
        // the processor's catalog check does that.
        if plain_input {
            match columns.iter().find(|c| &c.name == key) {
                None => issues.push(
                    format!("{path}[{index}]"),
                    format!("key column {key:?} is not a column of the dataset"),
                ),
                Some(column) if column.nullable => issues.push(
                    format!("{path}[{index}]"),
                    format!("key column {key:?} must be declared nullable = false"),
                ),
                Some(_) => {}
            }
        }
    }
}

/// Parses `schema.table`, both parts valid identifiers.
pub(crate) fn parse_table_name(text: &str) -> Result<TableName, String> {
    let Some((schema, table)) = text.split_once('.') else {
        return Err(format!("target {text:?} must be written schema.table"));
    };
    check_identifier(schema).map_err(|m| format!("target schema {m}"))?;
    check_identifier(table).map_err(|m| format!("target table {m}"))?;
    Ok(TableName {
        schema: schema.to_owned(),
        table: table.to_owned(),
    })
}

fn check_routes(catalog: &Catalog, issues: &mut Issues) {
    let datasets: Vec<&Dataset> = catalog.datasets.values().collect();
    for (i, a) in datasets.iter().enumerate() {
        for b in &datasets[i + 1..] {
            if a.s3.is_some() && a.s3 == b.s3 {
                issues.push(
                    format!("datasets.{}.s3", b.name),
                    format!(
                        "same s3 route as dataset {:?}: objects could not be routed",
                        a.name
                    ),
                );
            }
            if a.stream.is_some() && a.stream == b.stream {
                issues.push(
                    format!("datasets.{}.stream", b.name),
                    format!(
                        "same stream route as dataset {:?}: give one a different discriminator",
                        a.name
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
