//! How a dataset's table is laid out on Redshift: string sizes, distribution and sort key
//! (`[datasets.NAME.redshift]` and `max_length` on string columns). Other warehouses
//! ignore it.
//!
//! Defaults follow Redshift's advice to use the smallest column that fits
//! (`c_best-practices-smallest-column-size.html`) and to distribute and sort on the join
//! key: a dataset with a merge key is distributed and sorted on it, so `MERGE` joins rows on
//! the slice that holds them and skips blocks by key.

use super::{Column, Fields, Issues};

/// Bytes of a string column without `max_length`: Redshift's own default for `VARCHAR`.
pub const DEFAULT_MAX_LENGTH: u32 = 256;
/// Redshift's largest `VARCHAR`, in bytes (`VARCHAR(MAX)`).
pub const MAX_VARCHAR_BYTES: u32 = 65535;

/// What the Redshift sink does with a string longer than its column's `max_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TooLong {
    /// The row goes to the rejects table with the reason (`too_long = "reject"`).
    #[default]
    Reject,
    /// The value is cut to `max_length` bytes at a character boundary and counted
    /// (`too_long = "truncate"`): the row loads.
    Truncate,
}

impl TooLong {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match text {
            "reject" => Ok(Self::Reject),
            "truncate" => Ok(Self::Truncate),
            other => Err(format!(
                "{other:?} is not a choice; expected \"reject\" or \"truncate\""
            )),
        }
    }
}

/// Where a table's rows live across the cluster's slices (`DISTSTYLE`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Distribution {
    /// Redshift chooses, and may change its choice (`DISTSTYLE AUTO`).
    #[default]
    Auto,
    /// Round robin (`DISTSTYLE EVEN`).
    Even,
    /// A copy on every node (`DISTSTYLE ALL`): small tables that many queries join.
    All,
    /// By the hash of one column (`DISTSTYLE KEY DISTKEY(column)`).
    Key(String),
}

/// The Redshift layout of a dataset's target table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedshiftLayout {
    pub distribution: Distribution,
    /// The compound sort key; empty leaves the choice to Redshift (`SORTKEY AUTO`).
    pub sort_key: Vec<String>,
}

impl RedshiftLayout {
    /// Distributed and sorted on the merge key, when there is one.
    pub fn default_for(key_columns: &[String]) -> Self {
        match key_columns.first() {
            Some(first) => Self {
                distribution: Distribution::Key(first.clone()),
                sort_key: key_columns.to_vec(),
            },
            None => Self::default(),
        }
    }

    /// Every column the layout names.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        let dist = match &self.distribution {
            Distribution::Key(column) => Some(column.as_str()),
            _ => None,
        };
        dist.into_iter()
            .chain(self.sort_key.iter().map(String::as_str))
    }
}

/// Reads `[datasets.NAME.redshift]`: `dist_style` (auto, even, all, key), `dist_key`,
/// `sort_key`. Without it, or for what it leaves out, the defaults of
/// [`RedshiftLayout::default_for`].
pub(super) fn read_layout(
    fields: &mut Fields<'_>,
    key_columns: &[String],
    issues: &mut Issues,
) -> RedshiftLayout {
    let default = RedshiftLayout::default_for(key_columns);
    let Some(mut table) = fields.table("redshift", issues) else {
        return default;
    };
    let style = table.string("dist_style", issues);
    let dist_key = table.string("dist_key", issues).map(str::to_owned);
    let sort_key = table
        .string_array("sort_key", issues)
        .map(|names| names.into_iter().map(str::to_owned).collect());
    let distribution = match (style.map(str::to_ascii_lowercase).as_deref(), dist_key) {
        (None | Some("key"), Some(column)) => Distribution::Key(column),
        (None, None) => default.distribution,
        (Some("key"), None) => match default.distribution {
            Distribution::Key(column) => Distribution::Key(column),
            _ => {
                issues.push(
                    table.path_of("dist_key"),
                    "dist_style = \"key\" needs a dist_key (the dataset has no merge key to default to)",
                );
                Distribution::Auto
            }
        },
        (Some(style), Some(_)) if style != "key" => {
            issues.push(
                table.path_of("dist_key"),
                format!("dist_key goes with dist_style = \"key\", not {style:?}"),
            );
            Distribution::Auto
        }
        (Some("auto"), None) => Distribution::Auto,
        (Some("even"), None) => Distribution::Even,
        (Some("all"), None) => Distribution::All,
        (Some(other), _) => {
            issues.push(
                table.path_of("dist_style"),
                format!("unknown dist_style {other:?}; expected one of auto, even, all, key"),
            );
            Distribution::Auto
        }
    };
    table.finish(issues);
    RedshiftLayout {
        distribution,
        sort_key: sort_key.unwrap_or(default.sort_key),
    }
}

/// Checks that the layout names columns of the dataset (known when there is no transform;
/// with one, the processor checks against the planned output).
pub(super) fn check_layout_columns(
    fields: &Fields<'_>,
    layout: &RedshiftLayout,
    columns: &[Column],
    issues: &mut Issues,
) {
    for name in layout.columns() {
        if !columns.iter().any(|c| c.name == name) {
            issues.push(
                fields.path_of("redshift"),
                format!("{name:?} is not a column of the dataset"),
            );
        }
    }
}
