//! Reads a TOML tree field by field and collects *every* problem with its path, so a bad
//! catalog or config file is fixed in one round instead of one error per start-up.

use std::fmt;

use toml::{Table, Value};

/// One problem found in a configuration document, with the path of the offending field
/// (e.g. `datasets.orders.columns[3].type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Renders issues one per line, indented, for error messages.
pub fn render_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|issue| format!("  - {issue}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Default)]
pub(crate) struct Issues(Vec<Issue>);

impl Issues {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Issues only grow: comparing lengths tells whether a reader added any.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<Issue> {
        self.0
    }
}

pub(crate) fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// The fields of one TOML table. Every key asked for is remembered, so [`Fields::finish`]
/// can report the keys nobody asked for as unknown (a typo must not be ignored silently).
pub(crate) struct Fields<'a> {
    path: String,
    table: &'a Table,
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(path: impl Into<String>, table: &'a Table) -> Self {
        Self {
            path: path.into(),
            table,
            known: Vec::new(),
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn path_of(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.table.get(key)
    }

    /// The raw value of `key`, for fields of more than one type.
    pub(crate) fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        self.get(key)
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value, issues: &mut Issues) {
        issues.push(
            self.path_of(key),
            format!("expected {expected}, found {}", type_name(found)),
        );
    }

    pub(crate) fn string(&mut self, key: &'static str, issues: &mut Issues) -> Option<&'a str> {
        match self.get(key)? {
            Value::String(s) => Some(s.as_str()),
            other => {
                self.wrong_type(key, "a string", other, issues);
                None
            }
        }
    }

    pub(crate) fn required_string(
        &mut self,
        key: &'static str,
        issues: &mut Issues,
    ) -> Option<&'a str> {
        if !self.table.contains_key(key) {
            self.known.push(key);
            issues.push(self.path_of(key), "required field is missing");
            return None;
        }
        self.string(key, issues)
    }

    /// An integer; a string holding an integer is accepted too, because environment
    /// overrides arrive as strings.
    pub(crate) fn integer(&mut self, key: &'static str, issues: &mut Issues) -> Option<i64> {
        match self.get(key)? {
            Value::Integer(i) => Some(*i),
            Value::String(s) => match s.trim().parse::<i64>() {
                Ok(i) => Some(i),
                Err(_) => {
                    issues.push(
                        self.path_of(key),
                        format!("expected an integer, found {s:?}"),
                    );
                    None
                }
            },
            other => {
                self.wrong_type(key, "an integer", other, issues);
                None
            }
        }
    }

    /// An integer within `range`, reported with the range when outside it.
    pub(crate) fn integer_in(
        &mut self,
        key: &'static str,
        range: std::ops::RangeInclusive<i64>,
        issues: &mut Issues,
    ) -> Option<i64> {
        let value = self.integer(key, issues)?;
        if range.contains(&value) {
            Some(value)
        } else {
            issues.push(
                self.path_of(key),
                format!(
                    "{value} is out of range; expected {} to {}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }

    /// A boolean; the strings `true` and `false` are accepted for environment overrides.
    pub(crate) fn boolean(&mut self, key: &'static str, issues: &mut Issues) -> Option<bool> {
        match self.get(key)? {
            Value::Boolean(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            other => {
                self.wrong_type(key, "a boolean", other, issues);
                None
            }
        }
    }

    pub(crate) fn table(&mut self, key: &'static str, issues: &mut Issues) -> Option<Fields<'a>> {
        match self.get(key)? {
            Value::Table(t) => Some(Fields::new(self.path_of(key), t)),
            other => {
                self.wrong_type(key, "a table", other, issues);
                None
            }
        }
    }

    pub(crate) fn array(&mut self, key: &'static str, issues: &mut Issues) -> Option<&'a [Value]> {
        match self.get(key)? {
            Value::Array(a) => Some(a.as_slice()),
            other => {
                self.wrong_type(key, "an array", other, issues);
                None
            }
        }
    }

    pub(crate) fn string_array(
        &mut self,
        key: &'static str,
        issues: &mut Issues,
    ) -> Option<Vec<&'a str>> {
        let items = self.array(key, issues)?;
        let mut strings = Vec::with_capacity(items.len());
        let mut all_strings = true;
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => strings.push(s.as_str()),
                other => {
                    all_strings = false;
                    issues.push(
                        format!("{}[{index}]", self.path_of(key)),
                        format!("expected a string, found {}", type_name(other)),
                    );
                }
            }
        }
        all_strings.then_some(strings)
    }

    /// Reports every key of the table that no reader asked for.
    pub(crate) fn finish(self, issues: &mut Issues) {
        for key in self.table.keys() {
            if !self.known.contains(&key.as_str()) {
                let mut expected = self.known.clone();
                expected.sort_unstable();
                expected.dedup();
                issues.push(
                    self.path_of(key),
                    format!("unknown field; expected one of: {}", expected.join(", ")),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse::<Table>().expect("test TOML parses")
    }

    #[test]
    fn collects_type_errors_missing_fields_and_unknown_keys_together() {
        let doc = table("name = 3\ncount = \"x\"\nextra = true\n");
        let mut issues = Issues::default();
        let mut fields = Fields::new("root", &doc);
        assert_eq!(fields.string("name", &mut issues), None);
        assert_eq!(fields.integer("count", &mut issues), None);
        assert_eq!(fields.required_string("target", &mut issues), None);
        fields.finish(&mut issues);
        let rendered: Vec<String> = issues.into_vec().iter().map(Issue::to_string).collect();
        assert_eq!(
            rendered,
            vec![
                "root.name: expected a string, found an integer",
                "root.count: expected an integer, found \"x\"",
                "root.target: required field is missing",
                "root.extra: unknown field; expected one of: count, name, target",
            ]
        );
    }

    #[test]
    fn accepts_strings_for_numbers_and_booleans() {
        let doc = table("n = \"42\"\nb = \"TRUE\"\n");
        let mut issues = Issues::default();
        let mut fields = Fields::new("", &doc);
        assert_eq!(fields.integer("n", &mut issues), Some(42));
        assert_eq!(fields.boolean("b", &mut issues), Some(true));
        fields.finish(&mut issues);
        assert!(issues.is_empty());
    }

    #[test]
    fn range_errors_name_the_range() {
        let doc = table("n = 0\n");
        let mut issues = Issues::default();
        let mut fields = Fields::new("queue", &doc);
        assert_eq!(fields.integer_in("n", 1..=10, &mut issues), None);
        assert_eq!(
            issues.into_vec()[0].to_string(),
            "queue.n: 0 is out of range; expected 1 to 10"
        );
    }
}
