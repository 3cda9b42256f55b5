//! What PostgreSQL accepts and Redshift does not: the stand-in refuses these statements as
//! Redshift would (a syntax error), so a test on the stand-in cannot pass with SQL only
//! PostgreSQL runs. The grammar itself is checked by `sqlfluff` (Redshift dialect) over every
//! statement the stand-in saw; its grammar is permissive (it accepts `= ANY($1)`), hence this
//! list beside it.

/// Redshift's limit on one statement, its parameters included (`c_redshift-sql.html`).
pub const MAX_STATEMENT_BYTES: usize = 16 * 1024 * 1024;

/// The SQL with string literals and quoted identifiers blanked, upper-cased, whitespace
/// collapsed: patterns below cannot match inside values or names.
fn code_only(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                out.push(' ');
            }
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c.is_whitespace() => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            None => out.push(c.to_ascii_uppercase()),
        }
    }
    out
}

/// Why Redshift would refuse `sql`, one reason per PostgreSQL-only form found.
pub fn violations(sql: &str) -> Vec<String> {
    let code = code_only(sql);
    let mut found = Vec::new();
    let mut deny = |hit: bool, why: &str| {
        if hit {
            found.push(why.to_owned());
        }
    };
    deny(
        code.contains("ON CONFLICT"),
        "ON CONFLICT is PostgreSQL's (Redshift has MERGE)",
    );
    deny(code.contains("RETURNING"), "RETURNING is not supported");
    deny(
        code.contains("ANY(")
            || code.contains("ANY (")
            || code.contains("UNNEST(")
            || code.contains("[]")
            || code.contains("ARRAY["),
        "arrays (ANY, UNNEST, ARRAY[], type[]) are not supported",
    );
    deny(
        code.contains("PG_ADVISORY"),
        "advisory locks are not supported",
    );
    deny(
        code.contains("HASHTEXT"),
        "hashtext functions are not supported",
    );
    deny(
        code.starts_with("TRUNCATE") || code.contains("; TRUNCATE"),
        "TRUNCATE commits the transaction implicitly",
    );
    deny(
        code.contains("CREATE INDEX") || code.contains("CREATE UNIQUE INDEX"),
        "Redshift has no indexes",
    );
    deny(
        code.contains("FOR UPDATE"),
        "SELECT … FOR UPDATE is not supported",
    );
    deny(
        code.starts_with("CREATE") && code.contains("TABLE") && has_text_column(&code),
        "TEXT is VARCHAR(256) on Redshift: free text needs an explicit size",
    );
    if let Some(at) = altered_type(&code) {
        deny(
            !at.starts_with("VARCHAR") && !at.starts_with("CHARACTER VARYING"),
            "ALTER COLUMN … TYPE changes only the size of a VARCHAR column",
        );
    }
    if let Some(merge) = code.find("MERGE INTO ") {
        let after = &code[merge + "MERGE INTO ".len()..];
        let mut words = after.split(' ').filter(|w| !w.is_empty());
        let _target = words.next();
        deny(
            words.next() != Some("USING"),
            "MERGE takes no alias for its target",
        );
        deny(
            after.contains("USING (") || after.contains("USING("),
            "MERGE reads a table, not a subquery",
        );
    }
    found
}

/// The new type of an `ALTER TABLE … ALTER COLUMN … TYPE …` (upper-cased code).
fn altered_type(code: &str) -> Option<&str> {
    if !code.starts_with("ALTER TABLE") {
        return None;
    }
    let alter = code.find(" ALTER COLUMN ")?;
    let after = &code[alter..];
    after
        .find(" TYPE ")
        .map(|at| after[at + " TYPE ".len()..].trim())
}

/// Whether `sql` alters a column's type: Redshift runs that only outside a transaction
/// block (`r_ALTER_TABLE.html`).
pub fn alters_column_type(sql: &str) -> bool {
    code_only(sql)
        .split(';')
        .any(|statement| altered_type(statement.trim()).is_some())
}

/// Whether `sql` (one simple query, maybe several statements) opens a transaction block.
pub fn opens_transaction(sql: &str) -> bool {
    code_only(sql).split(';').any(|statement| {
        let statement = statement.trim();
        statement == "BEGIN"
            || statement.starts_with("BEGIN ")
            || statement.starts_with("START TRANSACTION")
    })
}

/// Whether a `CREATE TABLE` declares a column of type `TEXT` (`, TEXT` or `( TEXT` after a
/// blanked name).
fn has_text_column(code: &str) -> bool {
    code.split([',', '(']).any(|column| {
        let mut words = column.split(' ').filter(|w| !w.is_empty());
        matches!(words.next(), Some("TEXT" | "TEXT)"))
    })
}
