//! `processor check --warehouse`: what start-up would do to each target table, read from
//! PostgreSQL without changing anything, and a non-zero exit when a change is refused.

use std::path::Path;
use std::process::Command;

use processor::pipeline::plan_load_schema;
use processor::warehouse::Warehouse;
use processor::warehouse::postgres::PostgresWarehouse;
use shared::catalog::Catalog;
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::{TestSchemas, pg_client, postgres_url, unique_name};

/// Runs `processor check --warehouse` on `catalog`; (exit success, standard output).
fn check(dir: &Path, catalog: &str, platform: &str) -> (bool, String) {
    let catalog_path = dir.join(unique_name("catalog") + ".toml");
    std::fs::write(&catalog_path, catalog).expect("write catalog");
    let config_path = dir.join(unique_name("config") + ".toml");
    let config = format!(
        "[warehouse]\nurl = \"{}\"\n\n[processor]\nplatform_schema = \"{platform}\"\n",
        postgres_url()
    );
    std::fs::write(&config_path, config).expect("write config");
    let output = Command::new(crate::PROCESSOR)
        .arg("--config")
        .arg(&config_path)
        .args(["check", "--warehouse", "--catalog"])
        .arg(&catalog_path)
        .output()
        .expect("run processor check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.success(), format!("{stdout}{stderr}"))
}

#[tokio::test]
async fn check_warehouse_prints_the_plan_and_fails_on_a_refusal_changing_nothing() {
    let schemas = TestSchemas::new();
    let dir = std::env::temp_dir().join(unique_name("check-warehouse"));
    std::fs::create_dir_all(&dir).expect("dir");
    let v1 = schemas.retarget(CATALOG);
    let (ok, out) = check(&dir, &v1, &schemas.platform);
    assert!(ok, "{out}");
    let customers = format!("{}.customers (customers): create", schemas.sales);
    assert!(out.contains(&customers), "{out}");

    // Start-up creates the tables of v1.
    let warehouse = PostgresWarehouse::connect(&postgres_url(), &schemas.platform)
        .await
        .expect("connect");
    let catalog = Catalog::from_toml(&v1, "v1").expect("valid");
    for dataset in catalog.datasets() {
        let schema = plan_load_schema(dataset).await.expect("plan");
        warehouse
            .ensure_target(dataset, &schema)
            .await
            .expect("create");
    }
    let (ok, out) = check(&dir, &v1, &schemas.platform);
    assert!(ok && out.contains(": up to date"), "{out}");

    // A new column is planned, a type change refused, and neither is applied.
    let v2 = v1.replace(
        "name = \"country\"\ntype = \"string\"\n",
        "name = \"country\"\ntype = \"string\"\n\n[[datasets.customers.columns]]\nname = \"tier\"\ntype = \"int16\"\n",
    );
    let (ok, out) = check(&dir, &v2, &schemas.platform);
    assert!(ok && out.contains("+ add column tier smallint"), "{out}");
    let v3 = v1.replace(
        "name = \"signup_date\"\ntype = \"date\"",
        "name = \"signup_date\"\ntype = \"string\"",
    );
    let (ok, out) = check(&dir, &v3, &schemas.platform);
    assert!(!ok, "{out}");
    assert!(
        out.contains("! refused: column signup_date date → text"),
        "{out}"
    );
    let columns: i64 = pg_client()
        .await
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'customers' AND column_name = 'tier'",
            &[&schemas.sales],
        )
        .await
        .expect("columns")
        .get(0);
    assert_eq!(columns, 0, "check changed the table");
    let _ = std::fs::remove_dir_all(&dir);
}
