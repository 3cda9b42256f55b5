//! Each warehouse the platform loads — PostgreSQL, the embedded SQLite file and the
//! Redshift sink on its stand-in — behind one test harness: a connection with the platform
//! tables, and a way to look inside.

use std::sync::Arc;

use async_trait::async_trait;
use processor::warehouse::Warehouse;
use processor::warehouse::postgres::PostgresWarehouse;
use processor::warehouse::sqlite::SqliteWarehouse;
use shared::catalog::Dataset;
use test_support::{postgres_url, unique_name};

use crate::support::orders::{load_schema, orders_dataset};
use crate::support::redshift::RedshiftPeer;

/// One warehouse under test, and a way to look inside it.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A new connection (each call), with the platform tables in place.
    async fn connect(&self) -> Arc<dyn Warehouse>;
    /// (order_id, status) of the target, by order id.
    async fn rows(&self) -> Vec<(i64, String)>;
    /// Rows in a platform table: `load_ledger` or `rejects`.
    async fn platform_rows(&self, table: &str) -> i64;
    /// (row_number, raw, reason) of the rejects, by row number.
    async fn rejects(&self) -> Vec<(i64, Option<String>, String)>;
    /// The reason of every reject, whatever row it names (or none).
    async fn reject_reasons(&self) -> Vec<String>;
    /// (order_id, `column` as text) of the target, by order id.
    async fn column_text(&self, column: &str) -> Vec<(i64, Option<String>)>;
    fn dataset(&self, keyed: bool) -> Dataset;
    /// A catalog's text with its `sales.` and `events.` targets moved into this harness's
    /// own tables.
    fn retarget(&self, catalog_text: &str) -> String;

    /// A new connection with the orders target (keyed or appended) in place.
    async fn with_target(&self, keyed: bool) -> (Dataset, Arc<dyn Warehouse>) {
        let dataset = self.dataset(keyed);
        let warehouse = self.connect().await;
        warehouse
            .ensure_target(&dataset, &load_schema())
            .await
            .expect("target");
        (dataset, warehouse)
    }
}

pub struct Postgres {
    pub schema: String,
    pub platform: String,
}

impl Postgres {
    pub fn new() -> Self {
        let name = |prefix: &str| unique_name(prefix).replace('-', "_");
        Self {
            schema: name("contract"),
            platform: name("platform"),
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        test_support::pg_client().await
    }
}

#[async_trait]
impl Harness for Postgres {
    async fn connect(&self) -> Arc<dyn Warehouse> {
        let warehouse = PostgresWarehouse::connect(&postgres_url(), &self.platform)
            .await
            .expect("connect");
        warehouse.ensure_platform_tables().await.expect("platform");
        Arc::new(warehouse)
    }

    async fn rows(&self) -> Vec<(i64, String)> {
        let sql = format!(
            "SELECT order_id, status FROM {}.orders ORDER BY order_id",
            self.schema
        );
        self.client()
            .await
            .query(&sql, &[])
            .await
            .expect("rows")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    async fn platform_rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {}.{table}", self.platform);
        self.client()
            .await
            .query_one(&sql, &[])
            .await
            .expect("count")
            .get(0)
    }

    async fn rejects(&self) -> Vec<(i64, Option<String>, String)> {
        let sql = format!(
            "SELECT row_number, raw, reason FROM {}.rejects ORDER BY row_number",
            self.platform
        );
        self.client()
            .await
            .query(&sql, &[])
            .await
            .expect("rejects")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    async fn reject_reasons(&self) -> Vec<String> {
        let sql = format!("SELECT reason FROM {}.rejects", self.platform);
        let rows = self.client().await.query(&sql, &[]).await;
        rows.expect("rejects").iter().map(|r| r.get(0)).collect()
    }

    async fn column_text(&self, column: &str) -> Vec<(i64, Option<String>)> {
        let sql = format!(
            "SELECT order_id, \"{column}\"::text FROM {}.orders ORDER BY order_id",
            self.schema
        );
        let rows = self.client().await.query(&sql, &[]).await;
        let rows = rows.expect("column");
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    fn dataset(&self, keyed: bool) -> Dataset {
        orders_dataset(&self.schema, keyed)
    }

    fn retarget(&self, catalog_text: &str) -> String {
        let own = format!("target = \"{}.", self.schema);
        catalog_text
            .replace("target = \"sales.", &own)
            .replace("target = \"events.", &own)
    }
}

/// The Redshift sink on the stand-in, in front of the same PostgreSQL: what it wrote is
/// read as from PostgreSQL.
pub struct Redshift {
    pub postgres: Postgres,
    pub peer: RedshiftPeer,
}

impl Redshift {
    pub async fn new() -> Self {
        Self {
            postgres: Postgres::new(),
            peer: RedshiftPeer::start().await,
        }
    }
}

#[async_trait]
impl Harness for Redshift {
    async fn connect(&self) -> Arc<dyn Warehouse> {
        let warehouse = self.peer.connect(&self.postgres.platform).await;
        warehouse.ensure_platform_tables().await.expect("platform");
        Arc::new(warehouse)
    }

    async fn rows(&self) -> Vec<(i64, String)> {
        self.postgres.rows().await
    }

    async fn platform_rows(&self, table: &str) -> i64 {
        self.postgres.platform_rows(table).await
    }

    async fn rejects(&self) -> Vec<(i64, Option<String>, String)> {
        self.postgres.rejects().await
    }

    async fn reject_reasons(&self) -> Vec<String> {
        self.postgres.reject_reasons().await
    }

    async fn column_text(&self, column: &str) -> Vec<(i64, Option<String>)> {
        self.postgres.column_text(column).await
    }

    fn dataset(&self, keyed: bool) -> Dataset {
        self.postgres.dataset(keyed)
    }

    fn retarget(&self, catalog_text: &str) -> String {
        self.postgres.retarget(catalog_text)
    }
}

/// The database file is removed when the harness is dropped.
pub struct Sqlite {
    pub file: test_support::TempDatabase,
}

impl Sqlite {
    pub fn new() -> Self {
        Self {
            file: test_support::TempDatabase::new("contract"),
        }
    }

    pub fn query<T>(
        &self,
        sql: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        let connection = rusqlite::Connection::open(self.file.path()).expect("open");
        let mut statement = connection.prepare(sql).expect("prepare");
        statement
            .query_map([], row)
            .and_then(Iterator::collect)
            .expect("query")
    }
}

#[async_trait]
impl Harness for Sqlite {
    async fn connect(&self) -> Arc<dyn Warehouse> {
        let warehouse = SqliteWarehouse::open(self.file.path(), "ingest").expect("open");
        warehouse.ensure_platform_tables().await.expect("platform");
        Arc::new(warehouse)
    }

    async fn rows(&self) -> Vec<(i64, String)> {
        self.query(
            "SELECT order_id, status FROM sales_orders ORDER BY order_id",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    async fn platform_rows(&self, table: &str) -> i64 {
        self.query(&format!("SELECT count(*) FROM ingest_{table}"), |r| {
            r.get(0)
        })[0]
    }

    async fn rejects(&self) -> Vec<(i64, Option<String>, String)> {
        self.query(
            "SELECT row_number, raw, reason FROM ingest_rejects ORDER BY row_number",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    async fn reject_reasons(&self) -> Vec<String> {
        self.query("SELECT reason FROM ingest_rejects", |r| r.get(0))
    }

    async fn column_text(&self, column: &str) -> Vec<(i64, Option<String>)> {
        let sql = format!(
            "SELECT order_id, CAST(\"{column}\" AS TEXT) FROM sales_orders ORDER BY order_id"
        );
        self.query(&sql, |r| Ok((r.get(0)?, r.get(1)?)))
    }

    fn dataset(&self, keyed: bool) -> Dataset {
        orders_dataset("sales", keyed)
    }

    /// The database file is the harness's own.
    fn retarget(&self, catalog_text: &str) -> String {
        catalog_text.to_owned()
    }
}
