//! The local mode chosen by config (`[local]`): with one config file naming a folder and a
//! catalog of one's own, `check`, `serve`, `backfill`, `redrive`, `replay`, `put`, `query`
//! and `prune` all work against the folder, as they do against AWS — and the ledger keeps
//! every reload and replay from adding a row.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::local::{Dev, get, query, temp_dir};

const CATALOG: &str = r#"
[datasets.books]
format = "csv"
target = "shelf.books"
key = ["isbn"]
s3 = { prefix = "incoming/books/" }
columns = [
  { name = "isbn", type = "string", nullable = false },
  { name = "title", type = "string" },
]

[datasets.reviews]
target = "shelf.reviews"
key = ["review_id"]
stream = { name = "reviews" }
columns = [
  { name = "review_id", type = "string", nullable = false },
  { name = "stars", type = "int16" },
]
"#;

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `processor --config CONFIG ARGS`: whether it succeeded, and what it said.
fn processor(config: &Path, args: &[&str]) -> (bool, String) {
    crate::support::local::run_processor(Some(config), args)
}

/// Waits until `sql` (a count) returns `want` from the folder's database.
fn wait_for_count(dir: &Path, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = query(dir, sql, |r| r.get::<_, i64>(0));
        if got == [want] {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {got:?}, not {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_command_works_against_the_folder_a_local_config_names() {
    let dir = temp_dir("local-config");
    let platform = dir.join("platform");
    let catalog = dir.join("books.toml");
    std::fs::write(&catalog, CATALOG).expect("write catalog");
    let config = dir.join("local.toml");
    std::fs::write(
        &config,
        format!(
            "[local]\ndir = {:?}\nkinesis_port = 0\nstatus_port = 0\n\n[catalog]\npath = {:?}\n",
            path(&platform),
            path(&catalog)
        ),
    )
    .expect("write config");

    let (ok, said) = processor(&config, &["check", "--warehouse"]);
    assert!(ok && said.contains("holds no local platform yet"), "{said}");

    // serve runs the platform: files dropped into the folder load, a bad one is
    // dead-lettered with its reason.
    let serve = Dev::run(&["--config", path(&config), "serve"]);
    let status_page = serve.status_page();
    let landing = processor::local::Layout {
        dir: platform.clone(),
    }
    .landing()
    .join("incoming")
    .join("books");
    std::fs::create_dir_all(&landing).expect("folder");
    std::fs::write(
        landing.join("a.csv"),
        "isbn,title\n1,Dune\n,Nameless\n2,Emma\n",
    )
    .expect("drop");
    std::fs::write(landing.join("b.csv"), "isbn;title\n3;Ulysses\n").expect("drop");
    let told = serve.wait_for_each(&[
        "loaded incoming/books/a.csv".to_owned(),
        "dead-lettered incoming/books/b.csv".to_owned(),
    ]);
    assert!(told[0].contains("2 row(s), 1 rejected"), "{}", told[0]);
    assert!(told[1].contains("semicolon-delimited"), "{}", told[1]);
    // A producer puts records through the local stream.
    let records = dir.join("reviews.jsonl");
    std::fs::write(
        &records,
        "{\"review_id\": \"r1\", \"stars\": 5}\n{\"review_id\": \"r2\", \"stars\": 2}\n",
    )
    .expect("write");
    let (ok, said) = processor(&config, &["put", "--stream", "reviews", path(&records)]);
    assert!(ok, "{said}");
    wait_for_count(&platform, "SELECT count(*) FROM shelf_reviews", 2);
    // The status page of the local platform, from the same figures as `processor status`.
    let (code, body) = get(&format!("{status_page}.json"));
    let served: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(code, 200, "{body}");
    serve.stop();
    let (ok, said) = processor(&config, &["status", "--json"]);
    assert!(ok, "{said}");
    let report: serde_json::Value = serde_json::from_str(&said).expect("json");
    let counted = |sql: &str| query(&platform, sql, |r| r.get::<_, i64>(0))[0];
    for shown in [&report, &served] {
        let line = |name: &str| {
            shown["datasets"]
                .as_array()
                .and_then(|all| all.iter().find(|d| d["dataset"] == name).cloned())
                .unwrap_or_else(|| panic!("no {name} in {shown}"))
        };
        let (books, reviews) = (line("books"), line("reviews"));
        assert_eq!(
            books["rows_loaded"],
            counted("SELECT count(*) FROM shelf_books")
        );
        assert_eq!(
            books["rows_rejected"],
            counted("SELECT count(*) FROM ingest_rejects")
        );
        assert_eq!(
            books["files_completed"],
            counted("SELECT count(*) FROM ingest_file_loads WHERE completed_at IS NOT NULL")
        );
        assert_eq!(books["dead_letters"], 1, "{shown}");
        assert!(
            books["top_reasons"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("semicolon")),
            "{shown}"
        );
        assert_eq!(
            reviews["rows_loaded"],
            counted("SELECT count(*) FROM shelf_reviews")
        );
        assert!(reviews["stream_items"].as_u64() >= Some(1), "{shown}");
        assert!(reviews["lag_seconds"].as_u64().is_some(), "{shown}");
        assert_eq!(shown["dead_letters"]["depth"], 1, "{shown}");
    }
    // Where each file is, by its key in the local bucket.
    let (ok, said) = processor(&config, &["trace", "incoming/books/a.csv"]);
    assert!(
        ok && said.contains("=> loaded into books: 2 row(s), 1 rejected"),
        "{said}"
    );
    let (ok, said) = processor(&config, &["trace", "s3://demo/incoming/books/b.csv"]);
    assert!(
        ok && said.contains("=> dead-lettered") && said.contains("semicolon"),
        "{said}"
    );
    let (ok, said) = processor(&config, &["trace", "s3://other/incoming/books/b.csv"]);
    assert!(!ok && said.contains("has one bucket"), "{said}");
    let (ok, said) = processor(&config, &["status", "--fail-on", "dlq"]);
    assert!(
        !ok && said.contains("the dead-letter queue holds 1 message(s)"),
        "{said}"
    );
    let ledger = || {
        query(&platform, "SELECT count(*) FROM ingest_load_ledger", |r| {
            r.get::<_, i64>(0)
        })
    };
    let loads = ledger();

    let (ok, said) = processor(&config, &["check", "--warehouse"]);
    assert!(ok, "{said}");
    assert!(
        said.contains("2 table(s): 0 to create, 0 to change, 0 refused"),
        "{said}"
    );
    // The rejected row, found by dataset and reason, with its row number and raw text.
    let (ok, said) = processor(
        &config,
        &["rejects", "--dataset", "books", "--reason", "required"],
    );
    assert!(ok, "{said}");
    assert!(
        said.contains("s3://demo/incoming/books/a.csv row 3: column isbn: a value is required")
            && said.contains("raw: ,Nameless")
            && said.contains("1 reject(s) shown"),
        "{said}"
    );
    let (ok, said) = processor(&config, &["rejects", "--dataset", "nope"]);
    assert!(!ok && said.contains("unknown dataset \"nope\""), "{said}");
    let (ok, said) = processor(&config, &["rejects", "--since", "yesterday"]);
    assert!(!ok && said.contains("is not a date"), "{said}");
    // The dead letter, looked at without taking it.
    let (ok, said) = processor(&config, &["dlq"]);
    assert!(ok, "{said}");
    assert!(
        said.contains("books  s3://demo/incoming/books/b.csv")
            && said.contains("semicolon-delimited")
            && said.contains("1 dead letter(s) shown"),
        "{said}"
    );
    let (ok, said) = processor(&config, &["dlq", "--json"]);
    let letter: serde_json::Value =
        serde_json::from_str(said.lines().next().unwrap_or_default()).expect("a JSON line");
    assert!(ok && letter["dataset"] == "books", "{said}");
    let (ok, said) = processor(&config, &["redrive", "--dry-run"]);
    assert!(ok && said.contains("holds about 1 message(s)"), "{said}");

    // backfill enqueues the prefix again (both files), replay the stream's records, and
    // redrive the dead letter: the next serve loads nothing twice.
    let (ok, said) = processor(&config, &["backfill", "--prefix", "incoming/books/"]);
    assert!(ok, "{said}");
    assert!(
        said.contains("enqueued 2 work item(s) for 2 object(s)"),
        "{said}"
    );
    let (ok, said) = processor(
        &config,
        &["replay", "--stream", "reviews", "--from", "2020-01-01"],
    );
    assert!(ok, "{said}");
    assert!(said.contains("replayed 2 records of reviews"), "{said}");
    let (ok, said) = processor(&config, &["redrive"]);
    assert!(ok && said.contains("moved 1 message(s)"), "{said}");
    let (ok, said) = processor(&config, &["backfill", "--bucket", "elsewhere"]);
    assert!(!ok && said.contains("has one bucket"), "{said}");

    let serve = Dev::run(&["--config", path(&config), "serve"]);
    // Everything taken: the work queue empties, the bad file back in the dead-letter queue.
    wait_for_count(
        &platform,
        "SELECT count(*) FROM queue_messages WHERE queue = 'work'",
        0,
    );
    // (the redriven letter and the backfilled item; `serve` may queue the file once more
    // if it looks before they are back)
    wait_for_count(
        &platform,
        "SELECT count(*) >= 2 FROM queue_messages WHERE queue = 'work-dlq'",
        1,
    );
    serve.stop();
    let (ok, printed) = processor(
        &config,
        &["query", "SELECT title FROM shelf_books ORDER BY isbn"],
    );
    assert!(
        ok && printed.contains("Dune") && printed.contains("Emma"),
        "{printed}"
    );
    let books = query(&platform, "SELECT count(*) FROM shelf_books", |r| {
        r.get::<_, i64>(0)
    });
    let reviews = query(&platform, "SELECT count(*) FROM shelf_reviews", |r| {
        r.get::<_, i64>(0)
    });
    assert_eq!((books, reviews), (vec![2], vec![2]), "nothing loaded twice");
    // The replay is a work item of its own (its rows merge on their lineage); the
    // backfilled file is the same item as before, skipped by the ledger.
    assert_eq!(
        ledger(),
        vec![loads[0] + 1],
        "the ledger skipped the file loaded before"
    );
    let (ok, said) = processor(&config, &["prune", "--dry-run"]);
    assert!(
        ok && said.contains("rejects: would delete 0 row(s)"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The local platform reads one stream: a catalog routing two is refused by `check` and
/// by `serve`, saying so, rather than half read.
#[test]
fn a_catalog_routing_two_streams_is_refused_in_the_local_mode() {
    let dir = temp_dir("local-two-streams");
    let catalog = dir.join("two.toml");
    std::fs::write(
        &catalog,
        CATALOG.to_owned()
            + r#"
[datasets.likes]
target = "shelf.likes"
stream = { name = "likes" }
columns = [{ name = "isbn", type = "string" }]
"#,
    )
    .expect("write catalog");
    let config = dir.join("local.toml");
    std::fs::write(
        &config,
        format!(
            "[local]\ndir = {:?}\n\n[catalog]\npath = {:?}\n",
            path(&dir.join("platform")),
            path(&catalog)
        ),
    )
    .expect("write config");
    let (ok, said) = processor(&config, &["check"]);
    assert!(!ok && said.contains("reads one stream"), "{said}");
    assert!(said.contains("likes, reviews"), "{said}");
    let (ok, said) = processor(&config, &["serve"]);
    assert!(!ok && said.contains("reads one stream"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}
