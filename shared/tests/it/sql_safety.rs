//! SQL safety at the catalog: every name that reaches SQL text (dataset targets, columns,
//! key columns) is validated as a plain identifier when the catalog loads, so hostile
//! names are refused with their path before any statement is built. (Values never reach
//! SQL text: `processor/tests/warehouse_contract.rs` stores SQL-looking values verbatim in
//! PostgreSQL and SQLite.)

use shared::catalog::{Catalog, check_identifier};

const HOSTILE: &[&str] = &[
    "orders; DROP TABLE x",
    "a\" OR \"1\"=\"1",
    "x' --",
    "Orders",
    "1orders",
    "orders\u{0}",
    "ordérs",
    "",
];

#[test]
fn hostile_identifiers_are_refused_one_by_one() {
    for name in HOSTILE {
        assert!(check_identifier(name).is_err(), "{name:?} accepted");
    }
    let long = "a".repeat(128);
    assert!(
        check_identifier(&long).is_err(),
        "longer than Redshift allows"
    );
    for name in ["orders", "_staging", "order_items_2", &"a".repeat(127)] {
        assert!(check_identifier(name).is_ok(), "{name:?} refused");
    }
}

#[test]
fn a_catalog_with_hostile_names_lists_every_one_and_loads_nothing() {
    let text = r#"
[datasets.orders]
format = "csv"
target = "sales.orders; DROP TABLE x"
key = ["id\" OR 1=1 --"]
s3 = { prefix = "orders/" }
columns = [
  { name = "id\" OR 1=1 --", type = "int64", nullable = false },
  { name = "x' --", type = "string" },
]

[datasets.items]
format = "csv"
target = "Sales.items"
s3 = { prefix = "items/" }
columns = [{ name = "ok", type = "string" }]
"#;
    let err = Catalog::from_toml(text, "hostile.toml").expect_err("refused");
    let message = shared::error::report(&err);
    for (path, name) in [
        ("datasets.orders.target", "orders; DROP TABLE x"),
        ("datasets.orders.columns[0].name", "id\\\" OR 1=1 --"),
        ("datasets.orders.columns[1].name", "x' --"),
        ("datasets.items.target", "Sales"),
    ] {
        assert!(
            message.contains(path) && message.contains(name),
            "{path} naming {name:?} in: {message}"
        );
    }
}
