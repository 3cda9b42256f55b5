//! Redshift's table attributes in DDL (`DISTSTYLE`, `DISTKEY`, `[COMPOUND|INTERLEAVED]
//! SORTKEY`, `ENCODE`) have no PostgreSQL equivalent: the stand-in checks that the columns
//! they name are in the statement, then removes them.

/// The statement without Redshift's table attributes, or why Redshift would refuse it.
pub fn to_postgres(sql: &str) -> Result<String, String> {
    if !sql.trim_start().to_ascii_uppercase().starts_with("CREATE") {
        return Ok(sql.to_owned());
    }
    let mut out = String::with_capacity(sql.len());
    let mut named = Vec::new();
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        if c == '\'' || c == '"' {
            let end = rest[1..].find(c).map_or(rest.len(), |i| i + 2);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        let at_word = out
            .chars()
            .last()
            .is_none_or(|p| !(p.is_alphanumeric() || p == '_'));
        if at_word && let Some((len, names)) = attribute(rest)? {
            named.extend(names);
            rest = &rest[len..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    for name in named {
        if !out.contains(&name) {
            return Err(format!(
                "column {name} named in DISTKEY or SORTKEY does not exist"
            ));
        }
    }
    Ok(out)
}

/// A table attribute at the start of `text`: its length and the columns it names.
fn attribute(text: &str) -> Result<Option<(usize, Vec<String>)>, String> {
    let upper = |n: usize| text.get(..n).map(str::to_ascii_uppercase);
    for qualifier in ["COMPOUND ", "INTERLEAVED "] {
        if upper(qualifier.len()).as_deref() == Some(qualifier)
            && let Some((len, names)) = attribute(&text[qualifier.len()..])?
        {
            return Ok(Some((qualifier.len() + len, names)));
        }
    }
    for keyword in ["DISTKEY", "SORTKEY"] {
        if upper(keyword.len()).as_deref() != Some(keyword) {
            continue;
        }
        let after = &text[keyword.len()..];
        let trimmed = after.trim_start();
        let skipped = keyword.len() + after.len() - trimmed.len();
        if trimmed.to_ascii_uppercase().starts_with("AUTO") && keyword == "SORTKEY" {
            return Ok(Some((skipped + 4, Vec::new())));
        }
        let Some(inner) = trimmed.strip_prefix('(') else {
            return Err(format!("syntax error at or near {keyword}"));
        };
        let close = inner
            .find(')')
            .ok_or(format!("syntax error at or near {keyword}"))?;
        let names = inner[..close]
            .split(',')
            .map(|n| n.trim().to_owned())
            .collect();
        return Ok(Some((skipped + 1 + close + 1, names)));
    }
    for keyword in ["DISTSTYLE", "ENCODE"] {
        if upper(keyword.len()).as_deref() != Some(keyword) {
            continue;
        }
        let after = &text[keyword.len()..];
        let trimmed = after.trim_start();
        let word = trimmed
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(trimmed.len());
        if word == 0 {
            return Err(format!("syntax error at or near {keyword}"));
        }
        return Ok(Some((
            keyword.len() + after.len() - trimmed.len() + word,
            Vec::new(),
        )));
    }
    Ok(None)
}
