//! `processor query "SQL"`: runs SQL against the embedded warehouse and prints a table.

use std::path::Path;

use rusqlite::types::ValueRef;

/// Rows shown at most; the rest are counted.
const MAX_ROWS: usize = 200;
/// Characters shown of one value.
const MAX_WIDTH: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no embedded warehouse at {0}: run the demo first (or pass --dir)")]
    Missing(String),
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
}

fn text(value: ValueRef<'_>) -> String {
    let full = match value {
        ValueRef::Null => "NULL".to_owned(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => x.to_string(),
        ValueRef::Text(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        ValueRef::Blob(bytes) => format!("<{} bytes>", bytes.len()),
    };
    if full.chars().count() > MAX_WIDTH {
        format!("{}…", full.chars().take(MAX_WIDTH - 1).collect::<String>())
    } else {
        full
    }
}

/// Runs one statement read-only and renders its result as an aligned table.
pub fn run_query(database: &Path, sql: &str) -> Result<String, QueryError> {
    if !database.exists() {
        return Err(QueryError::Missing(database.display().to_string()));
    }
    let connection = rusqlite::Connection::open_with_flags(
        database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let mut statement = connection.prepare(sql)?;
    let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let mut rows = statement.query([])?;
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut more = 0usize;
    while let Some(row) = rows.next()? {
        if table.len() == MAX_ROWS {
            more += 1;
            continue;
        }
        table.push(
            (0..names.len())
                .map(|i| row.get_ref(i).map(text))
                .collect::<Result<_, _>>()?,
        );
    }
    let widths: Vec<usize> = (0..names.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(names[i].chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join(" │ ")
            .trim_end()
            .to_owned()
    };
    let mut out = String::new();
    out.push_str(&line(&names));
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "─".repeat(*w))
            .collect::<Vec<_>>()
            .join("─┼─"),
    );
    out.push('\n');
    for row in &table {
        out.push_str(&line(row));
        out.push('\n');
    }
    let shown = table.len();
    out.push_str(&match more {
        0 => format!("({shown} row{})\n", if shown == 1 { "" } else { "s" }),
        more => format!("({} rows, first {shown} shown)\n", shown + more),
    });
    Ok(out)
}
