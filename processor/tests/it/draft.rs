//! `processor catalog draft`: a draft of the example data set's files (CSV, gzip and zstd
//! CSV, JSON lines, Parquet) passes `check` and loads every row through `dev` without an
//! edit; files under an S3 prefix draft with their prefix as the route; and each file of
//! the bad-input corpus that cannot be drafted says why instead of giving a wrong draft.

use std::path::Path;
use std::sync::Arc;

use processor::drafting::{DraftError, DraftOptions, draft, render};
use processor::local::Layout;
use processor::local::generate::{DemoSize, generate};
use processor::objects::{FixedStore, S3Stores};
use shared::aws::load_sdk_config;
use shared::catalog::{Catalog, Compression};
use test_support::{clients, create_bucket, emulator_settings};

use crate::support::local::{Dev, query, temp_dir};

const DATASETS: [&str; 4] = ["customers", "orders", "order_items", "payments"];

fn run(args: &[&str]) -> (bool, String) {
    crate::support::local::run_processor(None, args)
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn a_draft_of_the_example_data_loads_it_without_edits() {
    let dir = temp_dir("draft");
    let generated = generate(&DemoSize {
        customers: 300,
        orders: 400,
        events: 0,
        dirty_share: 0.0,
        seed: 21,
    });
    let source = dir.join("source");
    for file in &generated.files {
        let at = source.join(&file.key);
        std::fs::create_dir_all(at.parent().expect("a folder")).expect("folder");
        std::fs::write(at, &file.bytes).expect("write");
    }
    let mut catalog = String::new();
    for dataset in DATASETS {
        let out = dir.join(format!("{dataset}.toml"));
        let folder = source.join("landing").join(dataset);
        let (ok, said) = run(&["catalog", "draft", path(&folder), "--output", path(&out)]);
        assert!(ok, "{said}");
        catalog += &std::fs::read_to_string(&out).expect("the draft");
    }
    let catalog_file = dir.join("drafted.toml");
    std::fs::write(&catalog_file, &catalog).expect("write");
    let (ok, said) = run(&["check", "--catalog", path(&catalog_file)]);
    assert!(ok, "check refuses the draft: {said}\n{catalog}");
    for (dataset, key) in [
        ("customers", "key = [\"customer_id\"]"),
        ("orders", "key = [\"order_id\"]"),
        ("order_items", "key = [\"order_id\", \"line_number\"]"),
        ("payments", "key = [\"payment_id\"]"),
    ] {
        assert!(
            catalog.contains(key),
            "{dataset}: {key} not drafted\n{catalog}"
        );
    }

    // Every file dropped into `dev` with the draft loads, with nothing rejected.
    let platform = dir.join("platform");
    let dev = Dev::start(&platform, &["--catalog", path(&catalog_file)]);
    let landing = Layout {
        dir: platform.clone(),
    }
    .landing();
    for file in &generated.files {
        let at = landing.join(&file.key);
        std::fs::create_dir_all(at.parent().expect("a folder")).expect("folder");
        std::fs::write(at, &file.bytes).expect("drop");
    }
    let loads: Vec<String> = generated
        .files
        .iter()
        .map(|file| format!("loaded {} into", file.key))
        .collect();
    for loaded in dev.wait_for_each(&loads) {
        assert!(loaded.contains(", 0 rejected"), "{loaded}");
    }
    dev.stop();
    for dataset in DATASETS {
        let rows = query(
            &platform,
            &format!("SELECT count(*) FROM public_{dataset}"),
            |r| r.get::<_, i64>(0),
        );
        let expected = generated.expected[dataset].rows;
        assert_eq!(rows, [i64::try_from(expected).expect("small")], "{dataset}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn corpus(file: &str) -> String {
    format!(
        "{}/../testdata/bad-inputs/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn draft_of(inputs: &[String]) -> Result<processor::drafting::Draft, DraftError> {
    let options = DraftOptions {
        inputs: inputs.to_vec(),
        name: None,
        target: None,
        stream: None,
        sample_rows: 10_000,
    };
    let stores = FixedStore(Arc::new(object_store::memory::InMemory::new()));
    draft(&options, &stores).await
}

#[tokio::test]
async fn files_of_the_bad_input_corpus_say_why_they_cannot_be_drafted() {
    for (file, reason) in [
        (
            "csv/ragged_rows.csv",
            "line 3 has 3 field(s) where the header has 6: a ragged file",
        ),
        ("csv/non_utf8.csv", "not UTF-8 text"),
        ("csv/empty.csv", "is empty"),
        ("csv/header_only.csv", "no data rows"),
        ("gzip/not_gzip.csv.gz", "does not decompress as gzip"),
        ("gzip/truncated.csv.gz", "does not decompress as gzip"),
        ("zstd/corrupt.csv.zst", "does not decompress as zstd"),
        ("parquet/not_parquet.parquet", "not a Parquet file"),
        ("parquet/truncated.parquet", "not a Parquet file"),
        ("parquet/empty.parquet", "no data rows"),
    ] {
        let err = draft_of(&[corpus(file)])
            .await
            .expect_err(&format!("{file} drafts"));
        let said = shared::error::report(&err);
        assert!(said.contains(reason), "{file}: {said}");
    }
    // Files that are not alike are not drafted as one dataset.
    let err = draft_of(&[corpus("csv/bom.csv"), corpus("jsonl/wrong_types.jsonl")])
        .await
        .expect_err("csv and jsonl");
    assert!(matches!(err, DraftError::Mismatch(_)), "{err:?}");
    // A JSON array is not JSON lines.
    let dir = temp_dir("draft-array");
    let array = dir.join("array.json");
    std::fs::write(&array, "[{\"a\": 1}, {\"a\": 2}]").expect("write");
    let err = draft_of(&[path(&array).to_owned()])
        .await
        .expect_err("an array");
    assert!(
        shared::error::report(&err).contains("JSON array"),
        "{err:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn files_that_only_look_wrong_draft_right() {
    // Semicolons: the draft says so, where a load with the default layout would fail.
    let semicolons = draft_of(&[corpus("csv/wrong_delimiter.csv")])
        .await
        .expect("drafts");
    assert_eq!(semicolons.csv.map(|c| c.delimiter), Some(b';'));
    // A byte order mark is not part of the first column's name.
    let bom = draft_of(&[corpus("csv/bom.csv")]).await.expect("drafts");
    assert_eq!(bom.columns[0].0, "customer_id");
    // A quoted field with a delimiter and a newline in it is one value.
    let quoted = draft_of(&[corpus("csv/embedded_newlines.csv")])
        .await
        .expect("drafts");
    assert_eq!(quoted.rows_sampled, 2);
    Catalog::from_toml(&render(&quoted), "the draft").expect("a catalog");
}

#[tokio::test]
async fn files_under_an_s3_prefix_draft_with_their_prefix_as_the_route() {
    let s3 = clients().await.s3;
    let bucket = create_bucket(&s3, "draft").await;
    let generated = generate(&DemoSize {
        customers: 200,
        orders: 10,
        events: 0,
        dirty_share: 0.0,
        seed: 3,
    });
    let mut customers: Vec<&processor::local::generate::GeneratedFile> = generated
        .files
        .iter()
        .filter(|f| f.key.starts_with("landing/customers/"))
        .collect();
    customers.sort_by(|a, b| a.key.cmp(&b.key));
    let upload = |key: String, bytes: Vec<u8>| {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(bytes.into())
            .send()
    };
    for file in &customers {
        let key = file.key.replace("landing/", "drops/");
        upload(key, file.bytes.clone()).await.expect("upload");
    }
    // The gzip file again, without its .gz: the draft must name the compression.
    assert!(customers[1].key.ends_with(".csv.gz"));
    upload("gz/customers.csv".to_owned(), customers[1].bytes.clone())
        .await
        .expect("upload");
    let settings = emulator_settings();
    let stores = S3Stores::new(&load_sdk_config(&settings).await, &settings);
    let options = DraftOptions {
        inputs: vec![format!("s3://{bucket}/drops/customers/")],
        name: None,
        target: Some("crm.customers".to_owned()),
        stream: None,
        sample_rows: 10_000,
    };
    let drafted = draft(&options, &stores).await.expect("drafts");
    assert_eq!(drafted.files.len(), 2);
    assert_eq!(drafted.name, "customers");
    assert_eq!(drafted.s3_prefix, "drops/customers/");
    assert!(!drafted.s3_prefix_guessed);
    assert_eq!(
        drafted.compression, None,
        "the names say which file is gzip"
    );
    let text = render(&drafted);
    assert!(
        text.contains("s3 = { prefix = \"drops/customers/\" }"),
        "{text}"
    );
    assert!(text.contains("target = \"crm.customers\""), "{text}");
    Catalog::from_toml(&text, "the draft").expect("a catalog");

    // A gzip file not named so: the catalog must say gzip.
    let gzip_only = DraftOptions {
        inputs: vec![format!("s3://{bucket}/gz/customers.csv")],
        ..options
    };
    let drafted = draft(&gzip_only, &stores).await.expect("drafts");
    assert_eq!(drafted.compression, Some(Compression::Gzip));
    assert!(render(&drafted).contains("compression = \"gzip\""));
}

/// The README's walk-through: a user's own files and sample records drafted into a
/// catalog, `check`, `dev`, files dropped into its folder and records put by an unchanged
/// Kinesis producer (the AWS SDK for Rust) through its endpoint, and `query`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_files_and_records_draft_load_and_query_end_to_end() {
    let dir = temp_dir("walk-through");
    let books = dir.join("source").join("books");
    std::fs::create_dir_all(&books).expect("folder");
    std::fs::write(
        books.join("2026-12.csv"),
        "isbn,title,price,published\n\
         9780000000001,Dune,9.99,1965-08-01\n\
         9780000000002,Emma,4.50,1815-12-23\n\
         9780000000003,Ulysses,12.00,1922-02-02\n",
    )
    .expect("write");
    let reviews = dir.join("source").join("reviews.jsonl");
    std::fs::write(
        &reviews,
        "{\"review_id\": \"r1\", \"isbn\": \"9780000000001\", \"stars\": 5, \"at\": \"2026-12-01T10:00:00Z\"}\n\
         {\"review_id\": \"r2\", \"isbn\": \"9780000000002\", \"stars\": 3, \"at\": \"2026-12-01T11:00:00Z\"}\n",
    )
    .expect("write");
    let drafts = [
        (vec![path(&books)], dir.join("books.toml")),
        (
            vec![path(&reviews), "--stream", "reviews", "--name", "reviews"],
            dir.join("reviews.toml"),
        ),
    ];
    let mut catalog = String::new();
    for (args, out) in &drafts {
        let mut command = vec!["catalog", "draft"];
        command.extend(args);
        command.extend(["--output", path(out)]);
        let (ok, said) = run(&command);
        assert!(ok, "{said}");
        catalog += &std::fs::read_to_string(out).expect("the draft");
    }
    assert!(
        catalog.contains("stream = { name = \"reviews\" }"),
        "{catalog}"
    );
    let catalog_file = dir.join("my.toml");
    std::fs::write(&catalog_file, &catalog).expect("write");
    let (ok, said) = run(&["check", "--catalog", path(&catalog_file)]);
    assert!(ok, "{said}\n{catalog}");

    let platform = dir.join("platform");
    let dev = Dev::start(&platform, &["--catalog", path(&catalog_file)]);
    let url = dev.kinesis_endpoint();
    let landing = Layout {
        dir: platform.clone(),
    }
    .landing()
    .join("landing")
    .join("books");
    std::fs::create_dir_all(&landing).expect("folder");
    std::fs::copy(books.join("2026-12.csv"), landing.join("2026-12.csv")).expect("drop");
    let kinesis = crate::kinesis_endpoint::client(&url);
    for record in std::fs::read_to_string(&reviews).expect("read").lines() {
        kinesis
            .put_record()
            .stream_name("reviews")
            .partition_key("isbn")
            .data(aws_sdk_kinesis::primitives::Blob::new(
                record.as_bytes().to_vec(),
            ))
            .send()
            .await
            .expect("PutRecord");
    }
    let loaded = dev.wait_for("loaded landing/books/2026-12.csv into public_books");
    assert!(loaded.contains("3 row(s), 0 rejected"), "{loaded}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let reviewed = || {
        query(
            &platform,
            "SELECT count(*) FROM sqlite_master WHERE name = 'public_reviews'",
            |r| r.get::<_, i64>(0),
        ) == [1]
            && query(&platform, "SELECT count(*) FROM public_reviews", |r| {
                r.get::<_, i64>(0)
            }) == [2]
    };
    while !reviewed() {
        assert!(
            std::time::Instant::now() < deadline,
            "the records never loaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    dev.stop();
    let (ok, printed) = run(&[
        "query",
        "--dir",
        path(&platform),
        "SELECT b.title, r.stars FROM public_books b JOIN public_reviews r ON r.isbn = b.isbn ORDER BY b.title",
    ]);
    assert!(ok, "{printed}");
    let dune = printed.find("Dune").expect("Dune reviewed");
    let emma = printed.find("Emma").expect("Emma reviewed");
    assert!(dune < emma && !printed.contains("Ulysses"), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Parquet columns the loader cannot read are left out with a note, and the key is looked
/// for among the columns drafted only (not in the cells of a neighbour).
#[tokio::test]
async fn parquet_columns_left_out_are_said_and_do_not_shift_the_key() {
    use datafusion::arrow::array::{ArrayRef, ListBuilder, StringArray, StringBuilder};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::parquet::arrow::ArrowWriter;

    let mut tags = ListBuilder::new(StringBuilder::new());
    for n in 0..3 {
        tags.values().append_value(format!("tag {n}"));
        tags.append(true);
    }
    let tags: ArrayRef = Arc::new(tags.finish());
    let events: ArrayRef = Arc::new(StringArray::from(vec!["e1", "e1", "e2"]));
    let batch = RecordBatch::try_from_iter([("tags", tags), ("event_id", events)]).expect("batch");
    let dir = temp_dir("draft-parquet");
    let file = dir.join("events.parquet");
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(&file).expect("create"),
        batch.schema(),
        None,
    )
    .expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");

    let drafted = draft_of(&[path(&file).to_owned()]).await.expect("drafts");
    let names: Vec<&str> = drafted.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["event_id"]);
    assert!(
        drafted
            .notes
            .iter()
            .any(|n| n.contains("column tags left out")),
        "{:?}",
        drafted.notes
    );
    assert!(
        drafted.key.columns.is_empty(),
        "event_id repeats: {:?}",
        drafted.key
    );
    let _ = std::fs::remove_dir_all(&dir);
}
