//! `COPY … FROM 's3://…' … FORMAT AS PARQUET [MANIFEST]` as Redshift runs it: the files come
//! from S3 (the emulator), columns map **by position**, the file's column count must match the
//! table's, each Parquet column must have a type Redshift accepts for its target column, and
//! one bad value (a string longer in bytes than its `VARCHAR(n)`, a NULL in a `NOT NULL`
//! column) fails the whole COPY — columnar COPY has no MAXERROR and no TRUNCATECOLUMNS.
//! What passes is written as CSV for PostgreSQL's own `COPY … FROM 'file'`.

use std::io::Write;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The COPY parameters Redshift accepts with a columnar format
/// (copy-usage_notes-copy-from-columnar.html).
const COLUMNAR_PARAMETERS: [&str; 8] = [
    "ACCEPTINVCHARS",
    "FILLRECORD",
    "IAM_ROLE",
    "CREDENTIALS",
    "STATUPDATE",
    "MANIFEST",
    "EXPLICIT_IDS",
    "FORMAT",
];

/// A Redshift `COPY` from S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCommand {
    /// The table as written (quoted identifiers kept).
    pub table: String,
    /// The column list as written, if any.
    pub columns: Option<String>,
    pub from: String,
    pub manifest: bool,
}

/// A column of the target table as PostgreSQL describes it.
#[derive(Debug, Clone)]
pub struct TargetColumn {
    pub name: String,
    /// `format_type` text: `character varying(10)`, `bigint`, `numeric(12,2)`, …
    pub sql_type: String,
    pub not_null: bool,
}

/// A token of the statement: a word or identifier, a string literal, or punctuation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Literal(String),
    Punct(char),
}

fn tokens(sql: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut text = String::new();
            while let Some(c) = chars.next() {
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                        text.push('\'');
                        continue;
                    }
                    break;
                }
                text.push(c);
            }
            out.push(Token::Literal(text));
        } else if c == '"' || c.is_alphanumeric() || c == '_' {
            // A (possibly qualified, possibly quoted) name or a keyword, kept as written.
            let mut word = String::new();
            let mut quoted = false;
            while let Some(&c) = chars.peek() {
                if c == '"' {
                    quoted = !quoted;
                } else if !(quoted || c.is_alphanumeric() || c == '_' || c == '.') {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push(Token::Word(word));
        } else {
            out.push(Token::Punct(c));
            chars.next();
        }
    }
    out
}

/// The statement as a Redshift COPY from S3; `None` for anything else (a PostgreSQL
/// `COPY … FROM STDIN` included). `Some(Err)` says why Redshift would refuse it.
pub fn parse(sql: &str) -> Option<Result<CopyCommand, String>> {
    let tokens = tokens(sql.trim().trim_end_matches(';'));
    let is_word = |token: Option<&Token>, word: &str| matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word));
    if !is_word(tokens.first(), "COPY") {
        return None;
    }
    let from_at = tokens.iter().position(|t| is_word(Some(t), "FROM"))?;
    let Some(Token::Literal(from)) = tokens.get(from_at + 1) else {
        return None;
    };
    if !from.starts_with("s3://") {
        return None;
    }
    Some(parse_copy(&tokens, from_at, from.clone()))
}

fn parse_copy(tokens: &[Token], from_at: usize, from: String) -> Result<CopyCommand, String> {
    let Some(Token::Word(table)) = tokens.get(1) else {
        return Err("COPY names no table".to_owned());
    };
    let columns = (from_at > 2).then(|| {
        tokens[2..from_at]
            .iter()
            .map(|t| match t {
                Token::Word(w) => w.clone(),
                Token::Punct(c) => c.to_string(),
                Token::Literal(l) => format!("'{l}'"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    });
    let mut manifest = false;
    let mut parquet = false;
    let mut rest = tokens[from_at + 2..].iter().peekable();
    while let Some(token) = rest.next() {
        let Token::Word(word) = token else {
            return Err(format!("syntax error at or near {token:?}"));
        };
        let upper = word.to_ascii_uppercase();
        if !COLUMNAR_PARAMETERS.contains(&upper.as_str()) {
            return Err(format!(
                "COPY parameter {upper} is not supported with a columnar format (PARQUET)"
            ));
        }
        match upper.as_str() {
            "MANIFEST" => manifest = true,
            "FORMAT" => {
                if matches!(rest.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("AS")) {
                    rest.next();
                }
                match rest.next() {
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("PARQUET") => parquet = true,
                    other => {
                        return Err(format!(
                            "the stand-in runs COPY … FORMAT AS PARQUET only, not {other:?}"
                        ));
                    }
                }
            }
            "IAM_ROLE" | "CREDENTIALS" | "ACCEPTINVCHARS" => {
                if matches!(rest.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("AS")) {
                    rest.next();
                }
                rest.next();
            }
            "STATUPDATE" => {
                if matches!(rest.peek(), Some(Token::Word(w)) if ["ON", "OFF", "TRUE", "FALSE"].iter().any(|v| w.eq_ignore_ascii_case(v)))
                {
                    rest.next();
                }
            }
            _ => {}
        }
    }
    if !parquet {
        return Err("the stand-in runs COPY … FORMAT AS PARQUET only".to_owned());
    }
    Ok(CopyCommand {
        table: table.clone(),
        columns,
        from,
        manifest,
    })
}

/// `s3://bucket/key` as (bucket, key).
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("not an S3 URL: {url}"))?;
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| format!("no key in {url}"))?;
    Ok((bucket.to_owned(), key.to_owned()))
}

/// The files a manifest names, with the length each must have.
pub fn manifest_entries(body: &[u8]) -> Result<Vec<(String, Option<u64>)>, String> {
    let manifest: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| format!("Manifest is not valid JSON: {err}"))?;
    let entries = manifest["entries"]
        .as_array()
        .ok_or("Manifest has no entries array")?;
    entries
        .iter()
        .map(|entry| {
            let url = entry["url"].as_str().ok_or("Manifest entry without url")?;
            let length = entry["meta"]["content_length"].as_u64();
            Ok((url.to_owned(), length))
        })
        .collect()
}

/// Whether Redshift's columnar COPY accepts a Parquet column read as `data_type` into a
/// column of `sql_type`.
pub fn accepts(sql_type: &str, data_type: &DataType) -> bool {
    let timestamp_unit =
        |unit: &TimeUnit| matches!(unit, TimeUnit::Millisecond | TimeUnit::Microsecond);
    match data_type {
        DataType::Boolean => sql_type == "boolean",
        DataType::Int16 => matches!(sql_type, "smallint" | "integer" | "bigint"),
        DataType::Int32 => matches!(sql_type, "integer" | "bigint"),
        DataType::Int64 => sql_type == "bigint",
        DataType::Float32 => matches!(sql_type, "real" | "double precision"),
        DataType::Float64 => sql_type == "double precision",
        DataType::Utf8 => {
            sql_type.starts_with("character varying") || sql_type.starts_with("character(")
        }
        DataType::Date32 => sql_type == "date",
        DataType::Timestamp(unit, None) => {
            timestamp_unit(unit) && sql_type == "timestamp without time zone"
        }
        DataType::Timestamp(unit, Some(_)) => {
            timestamp_unit(unit) && sql_type == "timestamp with time zone"
        }
        // Precision and scale must be the column's (a mismatch is "invalid type length").
        DataType::Decimal128(precision, scale) => {
            sql_type == format!("numeric({precision},{scale})")
        }
        _ => false,
    }
}

/// The byte limit of a `character varying(n)` column.
pub fn varchar_limit(sql_type: &str) -> Option<usize> {
    sql_type
        .strip_prefix("character varying(")?
        .strip_suffix(')')?
        .parse()
        .ok()
}

/// Checks one Parquet file's batches against the target columns and appends them as CSV;
/// returns the rows written.
pub fn append_parquet(
    file: &str,
    bytes: bytes::Bytes,
    columns: &[TargetColumn],
    out: &mut impl Write,
) -> Result<u64, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|builder| builder.build())
        .map_err(|err| format!("File '{file}' is not a valid Parquet file: {err}"))?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(|err| format!("File '{file}': {err}"))?;
        check_schema(file, &batch, columns)?;
        rows += write_csv(file, &batch, columns, out)?;
    }
    Ok(rows)
}

fn check_schema(file: &str, batch: &RecordBatch, columns: &[TargetColumn]) -> Result<(), String> {
    if batch.num_columns() != columns.len() {
        return Err(format!(
            "File '{file}' has {} columns; the target table has {}: the number of columns in the table and in the file must match",
            batch.num_columns(),
            columns.len()
        ));
    }
    for (field, column) in batch.schema().fields().iter().zip(columns) {
        if !accepts(&column.sql_type, field.data_type()) {
            return Err(format!(
                "File '{file}' has an incompatible Parquet schema for column '{}'. Column type: {}, Parquet schema: {} {:?}",
                column.name,
                column.sql_type,
                field.name(),
                field.data_type()
            ));
        }
    }
    Ok(())
}

fn write_csv(
    file: &str,
    batch: &RecordBatch,
    columns: &[TargetColumn],
    out: &mut impl Write,
) -> Result<u64, String> {
    let options = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|array| ArrayFormatter::try_new(array.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("File '{file}': {err}"))?;
    let limits: Vec<Option<usize>> = columns.iter().map(|c| varchar_limit(&c.sql_type)).collect();
    let io = |err: std::io::Error| format!("writing the stand-in's COPY file: {err}");
    for row in 0..batch.num_rows() {
        for (index, (array, column)) in batch.columns().iter().zip(columns).enumerate() {
            if index > 0 {
                out.write_all(b",").map_err(io)?;
            }
            if array.is_null(row) {
                if column.not_null {
                    return Err(format!(
                        "Missing data for not-null field '{}' (File '{file}', row {})",
                        column.name,
                        row + 1
                    ));
                }
                continue;
            }
            let text = formatters[index].value(row).to_string();
            if let Some(limit) = limits[index]
                && text.len() > limit
            {
                return Err(format!(
                    "String length exceeds DDL length: column '{}' is VARCHAR({limit}), the value has {} bytes (File '{file}', row {})",
                    column.name,
                    text.len(),
                    row + 1
                ));
            }
            out.write_all(b"\"").map_err(io)?;
            out.write_all(text.replace('"', "\"\"").as_bytes())
                .map_err(io)?;
            out.write_all(b"\"").map_err(io)?;
        }
        out.write_all(b"\n").map_err(io)?;
    }
    Ok(batch.num_rows() as u64)
}
