//! The embedded demo end to end: no AWS, no servers. A small run loads exactly the rows
//! the generator made clean and rejects exactly the dirty ones; a second run adds
//! nothing; and a run killed with SIGKILL in the middle (twice) and started again ends
//! with the same warehouse as an uninterrupted run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use processor::local::generate::{DemoSize, generate};
use processor::local::{DemoOptions, Layout, run_demo};

use crate::support::local::{Dev, processor_output, query, temp_dir};

const SIZE: DemoSize = DemoSize {
    customers: 300,
    orders: 500,
    events: 600,
    dirty_share: 0.05,
    seed: 11,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_loads_exactly_the_clean_rows_and_a_second_run_adds_none() {
    let dir = temp_dir("e2e");
    let options = DemoOptions {
        dir: dir.clone(),
        size: SIZE,
        events_per_second: 600,
        workers: 2,
        visibility_timeout: Duration::from_secs(5),
    };
    let summary = run_demo(&options, &mut |_| {}).await.expect("demo");
    let expected = generate(&SIZE).expected;
    assert_eq!(summary.dead_letters, 0);
    assert_eq!(summary.datasets.len(), expected.len());
    for dataset in &summary.datasets {
        let wanted = expected[dataset.dataset.as_str()];
        assert!(
            wanted.rejected > 0,
            "{}: the generator made dirty rows",
            dataset.dataset
        );
        assert_eq!(
            (dataset.rows, dataset.rejected),
            (wanted.rows as i64, wanted.rejected as i64),
            "{}",
            dataset.dataset
        );
        assert_eq!(dataset.rows_added, dataset.rows, "{}", dataset.dataset);
        assert_eq!(dataset.duplicates_prevented, 0, "{}", dataset.dataset);
    }
    // Counted in the warehouse itself, not only by the summary.
    let rejects: BTreeMap<String, i64> = query(
        &dir,
        "SELECT dataset, count(*) FROM ingest_rejects GROUP BY dataset",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .into_iter()
    .collect();
    assert_eq!(rejects["orders"], expected["orders"].rejected as i64);
    assert!(
        !rejects.contains_key("order_status_events"),
        "stream records are quarantined, not rejected"
    );
    let distinct_orders = query(
        &dir,
        "SELECT count(DISTINCT order_id) FROM sales_orders",
        |r| r.get::<_, i64>(0),
    )[0];
    assert_eq!(distinct_orders, expected["orders"].rows as i64);
    // The transform ran: statuses lower-cased, currencies upper-cased.
    let untransformed = query(
        &dir,
        "SELECT count(*) FROM sales_orders WHERE status <> lower(status) OR currency <> upper(currency)",
        |r| r.get::<_, i64>(0),
    )[0];
    assert_eq!(untransformed, 0);
    let latency = summary
        .datasets
        .iter()
        .find(|d| d.dataset == "order_status_events")
        .and_then(|d| d.latency)
        .expect("stream latency measured");
    assert!(latency.0 > 0.0 && latency.0 <= latency.1, "{latency:?}");

    // The same data again: nothing new, every item stopped by the ledger.
    let again = run_demo(&options, &mut |_| {}).await.expect("second run");
    for dataset in &again.datasets {
        assert_eq!(dataset.rows_added, 0, "{}", dataset.dataset);
        assert_eq!(
            dataset.duplicates_prevented, dataset.items_sent,
            "{}",
            dataset.dataset
        );
    }
    assert!(again.matches_expectation());

    // The folder holds the demo's catalog and a config naming the folder: the commands run
    // against it with them.
    let config = Layout { dir: dir.clone() }.config();
    let output = processor_output(Some(&config), &["check", "--warehouse"]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("0 to create, 0 to change, 0 refused"),
        "{said}"
    );
    let output = processor_output(
        Some(&config),
        &["query", "SELECT count(*) AS n FROM sales_customers"],
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    let rows = expected["customers"].rows.to_string();
    assert!(printed.lines().any(|line| line.trim() == rows), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every target's rows without the lineage and load time columns (which name files by
/// entity tag and differ between folders), sorted; and the rejects.
fn warehouse_contents(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut contents = BTreeMap::new();
    let tables = query(
        dir,
        "SELECT table_name FROM ingest_targets ORDER BY table_name",
        |r| r.get::<_, String>(0),
    );
    for table in tables {
        let columns: Vec<String> = query(dir, &format!("PRAGMA table_info(\"{table}\")"), |r| {
            r.get::<_, String>(1)
        })
        .into_iter()
        .filter(|c| !c.starts_with("_ingest_"))
        .collect();
        let select = columns
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let mut rows = query(dir, &format!("SELECT {select} FROM \"{table}\""), |r| {
            r.get::<_, String>(0)
        });
        rows.sort();
        contents.insert(table, rows);
    }
    let mut rejects = query(
        dir,
        "SELECT dataset || '|' || quote(row_number) || '|' || quote(raw) || '|' || reason FROM ingest_rejects",
        |r| r.get::<_, String>(0),
    );
    rejects.sort();
    contents.insert("(rejects)".into(), rejects);
    contents
}

fn demo_command(dir: &Path) -> Command {
    let mut command = Command::new(crate::PROCESSOR);
    command.args([
        "demo",
        "--dir",
        dir.to_str().expect("utf-8 path"),
        "--customers",
        &SIZE.customers.to_string(),
        "--orders",
        &SIZE.orders.to_string(),
        "--events",
        &SIZE.events.to_string(),
        "--dirty-share",
        &SIZE.dirty_share.to_string(),
        "--seed",
        &SIZE.seed.to_string(),
        "--rate",
        "150",
        "--visibility-timeout-secs",
        "2",
    ]);
    command
}

/// Starts the demo and kills it with SIGKILL once it reports loaded rows and `after`
/// has passed; returns the last progress line it printed.
fn start_and_kill(dir: &Path, after: Duration) -> String {
    let mut child = demo_command(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the demo");
    let stderr = child.stderr.take().expect("piped");
    let started = Instant::now();
    let mut last = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("progress line");
        let loading = line.contains("rows loaded") && !line.contains(" 0 rows loaded");
        last = line;
        if loading && started.elapsed() >= after {
            break;
        }
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let status = child.wait().expect("reaped");
    assert!(!status.success(), "killed, not finished: {last}");
    last
}

#[test]
fn a_demo_killed_twice_and_restarted_ends_like_an_uninterrupted_one() {
    let reference = temp_dir("reference");
    let status = demo_command(&reference)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("uninterrupted demo");
    assert!(
        status.success(),
        "the uninterrupted run matches the generator"
    );

    let interrupted = temp_dir("killed");
    let first = start_and_kill(&interrupted, Duration::from_millis(1500));
    let second = start_and_kill(&interrupted, Duration::from_millis(800));
    eprintln!("killed at: {first}\nkilled again at: {second}");
    let output = demo_command(&interrupted)
        .stderr(Stdio::null())
        .output()
        .expect("restarted demo");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the restarted run matches the generator:\n{summary}"
    );

    let (want, got) = (
        warehouse_contents(&reference),
        warehouse_contents(&interrupted),
    );
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (table, rows) in &want {
        assert!(!rows.is_empty(), "{table} has rows");
        assert_eq!(rows.len(), got[table].len(), "{table}: row count");
        assert!(rows == &got[table], "{table}: contents differ");
    }
    let _ = std::fs::remove_dir_all(&reference);
    let _ = std::fs::remove_dir_all(&interrupted);
}

#[test]
fn dev_loads_files_dropped_into_the_landing_folder_and_tells_each_outcome_once() {
    let dir = temp_dir("dev");
    let dev = Dev::start(&dir, &[]);
    let landing = Layout { dir: dir.clone() }.landing().join("landing");
    std::fs::create_dir_all(landing.join("customers")).expect("folder");
    std::fs::write(
        landing.join("customers").join("dropped in.csv"),
        "customer_id,email,full_name,country,signup_date,updated_at\n\
         1,a@example.com,Ada,DE,2024-01-02,2026-11-24T10:00:00Z\n\
         2,b@example.com,\"Brown, Ben\",GB,2024-02-03,2026-11-24T10:00:00Z\n\
         x3,c@example.com,Chloé,FR,2024-03-04,2026-11-24T10:00:00Z\n",
    )
    .expect("drop a file");
    assert!(
        dev.wait_for("queued")
            .contains("landing/customers/dropped in.csv")
    );
    let loaded = dev.wait_for("loaded landing/customers/dropped in.csv");
    assert!(
        loaded.contains("into sales_customers: 2 row(s), 1 rejected"),
        "{loaded}"
    );
    // A file that cannot load is told with its reason and the fix.
    std::fs::write(
        landing.join("customers").join("semicolons.csv"),
        "customer_id;email;full_name\n4;d@example.com;Dan\n",
    )
    .expect("drop a file");
    let dead = dev.wait_for("dead-lettered landing/customers/semicolons.csv");
    assert!(dead.contains("semicolon-delimited"), "{dead}");
    std::fs::create_dir_all(landing.join("elsewhere")).expect("folder");
    std::fs::write(landing.join("elsewhere").join("notes.txt"), "not data").expect("drop");
    assert!(dev.wait_for("skipped").contains("unrouted"));
    dev.stop();

    // A restart queues neither file again: one is loaded, the other waits in the DLQ.
    let dev = Dev::start(&dir, &[]);
    dev.wait_for("already loaded landing/customers/dropped in.csv");
    let again = dev.wait_for("dead-lettered landing/customers/semicolons.csv");
    assert!(again.contains("earlier; not queued again"), "{again}");
    dev.stop();

    // The catalog fixed (semicolons for customers) and the dead letters moved back.
    let fixed = dir.join("fixed.toml");
    let catalog = processor::local::EXAMPLE_CATALOG.replacen(
        "csv = { delimiter = \",\", header = true }",
        "csv = { delimiter = \";\", header = true }",
        1,
    );
    std::fs::write(&fixed, catalog).expect("write catalog");
    let dev = Dev::start(
        &dir,
        &[
            "--redrive",
            "--catalog",
            fixed.to_str().expect("utf-8 path"),
        ],
    );
    assert!(dev.wait_for("dead letter(s) back").contains("moved 1 "));
    dev.wait_for("queued landing/customers/semicolons.csv again");
    let loaded = dev.wait_for("loaded landing/customers/semicolons.csv into");
    assert!(loaded.contains("1 row(s), 0 rejected"), "{loaded}");
    dev.stop();
    let rows = query(
        &dir,
        "SELECT customer_id, full_name FROM sales_customers ORDER BY 1",
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
    );
    assert_eq!(
        rows,
        vec![
            (1, "Ada".to_owned()),
            (2, "Brown, Ben".to_owned()),
            (4, "Dan".to_owned())
        ]
    );
    let ledger = query(&dir, "SELECT count(*) FROM ingest_load_ledger", |r| {
        r.get::<_, i64>(0)
    });
    assert_eq!(ledger, [2], "each file loaded once");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dev`, `put` and `query` with a catalog of the user's own (not the example): files
/// dropped into the folder and records put to the local stream load, and are queried.
#[test]
fn dev_and_query_run_a_catalog_of_ones_own() {
    let dir = temp_dir("own-catalog");
    let catalog = dir.join("books.toml");
    std::fs::write(
        &catalog,
        r#"
[datasets.books]
format = "csv"
target = "shelf.books"
key = ["isbn"]
s3 = { prefix = "incoming/books/" }
columns = [
  { name = "isbn", type = "string", nullable = false },
  { name = "title", type = "string" },
  { name = "price", type = "decimal(8,2)" },
]

[datasets.reviews]
target = "shelf.reviews"
stream = { name = "reviews" }
columns = [
  { name = "isbn", type = "string", nullable = false },
  { name = "stars", type = "int16" },
]
"#,
    )
    .expect("write catalog");
    let dev = Dev::start(&dir, &["--catalog", catalog.to_str().expect("utf-8 path")]);
    let folder = Layout { dir: dir.clone() }
        .landing()
        .join("incoming")
        .join("books");
    std::fs::create_dir_all(&folder).expect("folder");
    std::fs::write(
        folder.join("2026-12.csv"),
        "isbn,title,price\n978-0,Dune,9.99\n978-1,Emma,4.50\n",
    )
    .expect("drop a file");
    let loaded = dev.wait_for("loaded incoming/books/2026-12.csv");
    assert!(
        loaded.contains("into shelf_books: 2 row(s), 0 rejected"),
        "{loaded}"
    );
    // Records put to the local stream, as a producer puts to Kinesis; a line that is not
    // JSON is not put, and says so.
    let reviews = dir.join("reviews.jsonl");
    std::fs::write(
        &reviews,
        "{\"isbn\": \"978-0\", \"stars\": 5}\nnot json\n{\"isbn\": \"978-1\", \"stars\": 3}\n",
    )
    .expect("write records");
    let put = |stream: &str| {
        Command::new(crate::PROCESSOR)
            .args(["put", "--dir", dir.to_str().expect("utf-8 path")])
            .args(["--stream", stream, "--partition-key", "isbn"])
            .arg(&reviews)
            .output()
            .expect("run put")
    };
    let output = put("reviews");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a line was not put: {said}");
    assert!(
        said.contains("put 2 record(s) into stream reviews")
            && said.contains("line 2 not put: not JSON"),
        "{said}"
    );
    let streamed = dev.wait_for("stream records loaded into shelf_reviews");
    assert!(streamed.contains("+2 row(s)"), "{streamed}");
    let output = put("no-such-stream");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && said.contains("no stream \"no-such-stream\" in this folder (it has: reviews)"),
        "{said}"
    );
    dev.stop();
    let output = Command::new(crate::PROCESSOR)
        .args(["query", "--dir", dir.to_str().expect("utf-8 path")])
        .arg("SELECT title, price FROM shelf_books ORDER BY isbn")
        .output()
        .expect("run query");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.contains("Dune") && printed.contains("9.99") && printed.contains("Emma"),
        "{printed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The local buckets behave like S3 where the planner and the stream handler rely on it:
/// ranged reads pinned to the entity tag of the notification, and writes.
#[tokio::test]
async fn local_buckets_pin_reads_to_the_entity_tag() {
    use ingest_batch::plan::{ObjectReadError, ObjectReader};
    use ingest_stream::handler::ObjectWriter;
    use processor::objects::folder::LocalBuckets;
    let dir = temp_dir("buckets");
    let buckets = LocalBuckets::new(&dir);
    buckets
        .put("landing", "a b/ü.csv", b"id\n1\n2\n".to_vec())
        .await
        .expect("put");
    let object = buckets
        .created_object("landing", "a b/ü.csv")
        .await
        .expect("head");
    assert_eq!(object.size, 7);
    assert!(!object.etag.is_empty());
    let bytes = buckets.read_range(&object, 3, 5).await.expect("range");
    assert_eq!(bytes.as_ref(), b"1\n");
    // Overwritten since the notification: the old one names content that is gone.
    std::thread::sleep(Duration::from_millis(20));
    buckets
        .put("landing", "a b/ü.csv", b"id\n3\n".to_vec())
        .await
        .expect("overwrite");
    let err = buckets
        .read_range(&object, 0, 2)
        .await
        .expect_err("changed");
    assert!(matches!(err, ObjectReadError::Gone { .. }), "{err}");
    assert!(
        buckets.put("../escape", "k", Vec::new()).await.is_err(),
        "no bucket outside the root"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
