//! A draft as catalog TOML, with a comment on what the sample showed for each choice.

use std::fmt::Write;

use shared::catalog::FileFormat;

use super::Draft;

use crate::text::toml_string as quoted;

/// The draft as a catalog file.
pub fn render(draft: &Draft) -> String {
    let mut out = String::new();
    let name = &draft.name;
    let _ = writeln!(
        out,
        "# Drafted by `processor catalog draft` from {} file(s), {} row(s) sampled: the first\n\
         # rows of {} file(s). Types, nullability and the key come from that sample: check\n\
         # them, then `processor check --catalog FILE`.",
        draft.files.len(),
        draft.rows_sampled,
        draft.files_sampled
    );
    for note in &draft.notes {
        let _ = writeln!(out, "# Note: {note}");
    }
    let _ = writeln!(out, "\n[datasets.{name}]");
    let sources = match draft.files.as_slice() {
        [one] => one.clone(),
        [first, ..] => format!("{first} and {} more file(s)", draft.files.len() - 1),
        [] => String::new(),
    };
    let _ = writeln!(
        out,
        "description = {}",
        quoted(&format!("Drafted from {sources}"))
    );
    if let Some(stream) = &draft.stream {
        let _ = writeln!(
            out,
            "# records put to this stream load here\nstream = {{ name = {} }}",
            quoted(stream)
        );
    } else {
        let _ = writeln!(out, "format = {}", quoted(draft.format.as_str()));
    }
    if let Some(compression) = draft.compression.filter(|_| draft.stream.is_none()) {
        let _ = writeln!(
            out,
            "# the file names do not say it, so the catalog must\ncompression = {}",
            quoted(compression.as_str())
        );
    }
    if let (FileFormat::Csv, Some(csv)) = (draft.format, draft.csv) {
        let delimiter = char::from(csv.delimiter).to_string();
        let _ = writeln!(
            out,
            "csv = {{ delimiter = {}, header = {} }}",
            quoted(&delimiter),
            csv.header
        );
    }
    let _ = writeln!(out, "target = {}", quoted(&draft.target));
    let _ = writeln!(out, "# {}", draft.key.why);
    let key: Vec<String> = draft.key.columns.iter().map(|c| quoted(c)).collect();
    let _ = writeln!(out, "key = [{}]", key.join(", "));
    if draft.stream.is_some() {
        return render_columns(out, draft);
    }
    let _ = writeln!(
        out,
        "# {}\ns3 = {{ prefix = {} }}",
        if draft.s3_prefix_guessed {
            "where the files will land (a suggestion: the drafted files were local); objects under it load here"
        } else {
            "the prefix the drafted files are under; objects under it load here"
        },
        quoted(&draft.s3_prefix)
    );
    render_columns(out, draft)
}

fn render_columns(mut out: String, draft: &Draft) -> String {
    let name = &draft.name;
    for (column, inferred) in &draft.columns {
        let _ = writeln!(out, "\n# {}", inferred.seen);
        let _ = writeln!(out, "[[datasets.{name}.columns]]");
        let _ = writeln!(out, "name = {}", quoted(column));
        let _ = writeln!(out, "type = {}", quoted(&inferred.type_label()));
        let _ = writeln!(out, "nullable = {}", inferred.nullable);
        if let Some(max_length) = inferred.max_length {
            let _ = writeln!(out, "max_length = {max_length}");
        }
    }
    out
}
