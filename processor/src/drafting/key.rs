//! The merge key a draft proposes: an id-like column (or pair of them) whose values are
//! present and unique in every sampled row — or none, saying why.

use std::collections::HashSet;

use datafusion::arrow::datatypes::DataType;

/// The key proposed, or none; either way why, for the draft's comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProposal {
    pub columns: Vec<String>,
    pub why: String,
}

/// Names that say "identifier".
fn id_like(name: &str) -> bool {
    name == "id"
        || name == "uuid"
        || ["_id", "_key", "_code", "_number", "_no", "_uuid"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// Types a key can have (no floats, booleans or timestamps).
fn keyable(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::Int16 | DataType::Int32 | DataType::Int64
    ) || matches!(data_type, DataType::Decimal128(_, 0))
}

/// Proposes a key from `rows` (cells in `columns`' order).
pub fn propose_key(columns: &[(String, DataType)], rows: &[Vec<Option<String>>]) -> KeyProposal {
    if rows.len() < 2 {
        return KeyProposal {
            columns: Vec::new(),
            why: "too few sampled rows to tell a key: rows append (set key = [...] to merge)"
                .to_owned(),
        };
    }
    let candidates: Vec<usize> = (0..columns.len())
        .filter(|&i| id_like(&columns[i].0) && keyable(&columns[i].1))
        .collect();
    let unique = |indices: &[usize]| unique_and_present(rows, indices);
    let said = format!("present and unique in all {} sampled rows", rows.len());
    if let Some(&single) = candidates.iter().find(|&&i| unique(&[i])) {
        return KeyProposal {
            columns: vec![columns[single].0.clone()],
            why: said,
        };
    }
    for (n, &first) in candidates.iter().enumerate() {
        if let Some(&second) = candidates[n + 1..]
            .iter()
            .find(|&&second| unique(&[first, second]))
        {
            return KeyProposal {
                columns: vec![columns[first].0.clone(), columns[second].0.clone()],
                why: format!("together {said}"),
            };
        }
    }
    let other_unique: Vec<&str> = (0..columns.len())
        .filter(|i| !candidates.contains(i) && keyable(&columns[*i].1) && unique(&[*i]))
        .map(|i| columns[i].0.as_str())
        .collect();
    let hint = if other_unique.is_empty() {
        String::new()
    } else {
        format!(
            "; unique but not named like an id: {}",
            other_unique.join(", ")
        )
    };
    KeyProposal {
        columns: Vec::new(),
        why: format!(
            "no id-like column, or pair of them, is {said}: rows append (set key = [...] to merge){hint}"
        ),
    }
}

fn unique_and_present(rows: &[Vec<Option<String>>], indices: &[usize]) -> bool {
    let mut seen = HashSet::with_capacity(rows.len());
    rows.iter().all(|row| {
        let values: Option<Vec<&str>> = indices
            .iter()
            .map(|&i| {
                row.get(i)
                    .and_then(Option::as_deref)
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
            })
            .collect();
        values.is_some_and(|values| seen.insert(values))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[&[&str]]) -> Vec<Vec<Option<String>>> {
        values
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| (!v.is_empty()).then(|| (*v).to_owned()))
                    .collect()
            })
            .collect()
    }

    fn columns(names: &[&str]) -> Vec<(String, DataType)> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), DataType::Utf8))
            .collect()
    }

    #[test]
    fn a_unique_id_column_is_the_key() {
        let proposal = propose_key(
            &columns(&["name", "customer_id"]),
            &rows(&[&["a", "1"], &["a", "2"]]),
        );
        assert_eq!(proposal.columns, ["customer_id"]);
    }

    #[test]
    fn a_pair_of_ids_when_no_single_one_is_unique() {
        let proposal = propose_key(
            &columns(&["order_id", "order_item_id", "price"]),
            &rows(&[&["o1", "1", "9"], &["o1", "2", "9"], &["o2", "1", "9"]]),
        );
        assert_eq!(proposal.columns, ["order_id", "order_item_id"]);
    }

    #[test]
    fn no_key_when_ids_repeat_or_are_missing() {
        let proposal = propose_key(
            &columns(&["event_id", "email"]),
            &rows(&[&["1", "a@x"], &["", "b@x"]]),
        );
        assert!(proposal.columns.is_empty());
        assert!(
            proposal
                .why
                .contains("unique but not named like an id: email"),
            "{}",
            proposal.why
        );
    }
}
