//! Fault injection against the emulator and PostgreSQL: the `processor serve` binary is
//! killed at random points, its connection to the emulator is cut, slowed, throttled and
//! stalled, every message is delivered several times, and poison messages are mixed with
//! good ones. Each scenario ends with an exact check of the warehouse: every expected row
//! once, nothing else. `TEST_INGEST_FAULT_SCALE=large` runs more work and more faults;
//! `TEST_INGEST_FAULT_SEED` repeats a run's random choices (each scenario prints its seed).
//! PostgreSQL restarts are in `postgres_restart.rs` (they would disturb these tests).

mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use faults::{FaultFixture, MAX_RECEIVE_COUNT, Scenario, Sink};
use proxy::{FaultCounts, FaultPlan, FaultProxy};
use rand::Rng;
use rand::seq::SliceRandom;
use shared::envelope::{MessageSizeLimit, WorkItem};
use shared::queue::OutgoingMessage;
use test_support::faults;
use test_support::{aws_endpoint, eventually, get_object_bytes, queue_depth};

/// The `processor` binary these tests run.
const PROCESSOR: &str = env!("CARGO_BIN_EXE_processor");

/// Each scenario runs against PostgreSQL and against the Redshift sink (on the Redshift
/// stand-in, in front of the same PostgreSQL), with the same exact checks.
macro_rules! on_every_sink {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Sink::Postgres).await;
                }
            )*
        }
        mod redshift {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Sink::Redshift).await;
                }
            )*
        }
    };
}

on_every_sink!(
    a_catalog_change_evolves_the_table_on_restart_and_a_type_change_is_refused,
    sigkill_at_random_points_loses_nothing_and_doubles_nothing,
    a_duplicate_storm_loads_every_row_once,
    poison_messages_go_to_the_dlq_with_reasons_and_the_good_ones_load,
);

async fn sigkill_at_random_points_loses_nothing_and_doubles_nothing(sink: Sink) {
    // A kill costs the file in hand a receive, and SQS moves a message received
    // `maxReceiveCount` times to the DLQ: a file in hand at five crashes in a row is taken
    // out of the way, which is the point of a DLQ. Kills every second or so often land on
    // the same (oldest) file, so here the DLQ waits for more receives than there are lives:
    // the check is about loss and duplicates, and nothing may reach the DLQ.
    let Scenario {
        scale,
        seed,
        mut rng,
        fixture,
        config,
    } = Scenario::with_max_receive_count(PROCESSOR, "sigkill", sink, |scale| {
        scale.faults as u32 + 2
    })
    .await;
    // Enough loads that every life has some to interrupt.
    let (items, expected) = fixture
        .upload_order_items(scale.files * 3, scale.rows_per_file)
        .await;
    fixture.send_items(&items).await;

    // Each life of the processor ends with SIGKILL after a random time; a kill that leaves
    // messages in flight interrupted work in hand (a read, a COPY, a commit or a delete).
    // A life starts once work is visible again: what the last one held stays hidden until
    // its visibility timeout runs out.
    let mut interrupted = 0;
    let mut kills = 0;
    let mut lives = Vec::new();
    for _ in 0..scale.faults {
        let before = fixture.ledger_entries().await.unwrap_or(0);
        if before == items.len() as i64 {
            break;
        }
        eventually("work to be visible", Duration::from_secs(60), || async {
            let (visible, _) = queue_depth(&fixture.clients.sqs, &fixture.queue_url).await;
            (visible > 0).then_some(())
        })
        .await;
        let processor = fixture.start_processor(&config);
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_500))).await;
        processor.kill();
        kills += 1;
        let after = fixture.ledger_entries().await.unwrap_or(0);
        let (_, in_flight) = queue_depth(&fixture.clients.sqs, &fixture.queue_url).await;
        if in_flight > 0 {
            interrupted += 1;
        }
        lives.push(after - before);
    }
    let _last = fixture.start_processor(&config);
    fixture
        .wait_until_loaded(items.len(), 0, scale.timeout)
        .await;
    let found = fixture.assert_rows_exact(&expected).await;
    assert!(
        interrupted > 0,
        "no kill landed while work was in hand: the scenario proved nothing"
    );
    assert!(
        fixture.dead_letters().await.is_empty(),
        "nothing dead-lettered"
    );
    println!(
        "FAULTS sigkill sink={sink:?} seed={seed} kills={kills} interrupted={interrupted} items={} loaded_per_life={lives:?} rows_expected={} rows_found={found}",
        items.len(),
        expected.len()
    );
}

#[tokio::test]
async fn a_faulty_network_to_the_emulator_loses_nothing_and_doubles_nothing() {
    let Scenario {
        scale,
        seed,
        fixture,
        ..
    } = Scenario::start(PROCESSOR, "proxy", Sink::Postgres).await;
    let (items, expected) = fixture
        .upload_order_items(scale.files, scale.rows_per_file)
        .await;
    fixture.send_items(&items).await;

    let upstream: SocketAddr = aws_endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("emulator address");
    let plan = FaultPlan {
        slow: 0.10,
        throttle: 0.10,
        server_error: 0.05,
        stall: 0.03,
        slow_delay: Duration::from_millis(150),
        // Longer than the processor's 4 s attempt timeout.
        stall_for: Duration::from_secs(6),
        cut_after_bytes: (200, 40_000),
    };
    let proxy = FaultProxy::start(upstream, plan, seed).await;
    let config = fixture.config(&proxy.url());
    let mut processor = fixture.start_processor(&config);
    fixture
        .wait_until_loaded(items.len(), 0, scale.timeout)
        .await;
    processor.assert_running();
    let found = fixture.assert_rows_exact(&expected).await;
    let counts = &proxy.counts;
    for (what, counter) in [
        ("cut", &counts.cut),
        ("slowed", &counts.slowed),
        ("throttled", &counts.throttled),
        ("answered with a server error", &counts.server_errors),
        ("stalled", &counts.stalled),
    ] {
        assert!(
            FaultCounts::get(counter) > 0,
            "no connection was {what}: {}",
            counts.summary()
        );
    }
    let dead = fixture.dead_letters().await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    println!(
        "FAULTS proxy seed={seed} {} items={} rows_expected={} rows_found={found}",
        counts.summary(),
        items.len(),
        expected.len()
    );
}

async fn a_duplicate_storm_loads_every_row_once(sink: Sink) {
    let Scenario {
        scale,
        seed,
        mut rng,
        fixture,
        config,
    } = Scenario::start(PROCESSOR, "storm", sink).await;
    let (items, expected) = fixture
        .upload_order_items(scale.files, scale.rows_per_file)
        .await;

    // Every item three times, in a shuffled order, while a processor is already running…
    const COPIES: usize = 3;
    let mut storm: Vec<WorkItem> = items
        .iter()
        .flat_map(|item| std::iter::repeat_n(item.clone(), COPIES))
        .collect();
    storm.shuffle(&mut rng);
    let _first = fixture.start_processor(&config);
    let _second = fixture.start_processor(&config);
    let (early, late) = storm.split_at(storm.len() / 2);
    fixture.send_items(early).await;
    // …and every object uploaded again with the same bytes, as a client retrying its
    // upload does, each upload bringing its own notification and work item.
    let mut uploaded_again = 0;
    for item in &items {
        let WorkItem::File(file) = item else {
            unreachable!("file items")
        };
        let body = get_object_bytes(&fixture.clients.s3, &file.bucket, &file.key).await;
        let again = fixture.upload(&file.key, body).await;
        assert_eq!(
            again.idempotency_key(),
            item.idempotency_key(),
            "the same bytes under the same key are the same item"
        );
        fixture.send_items(&[again]).await;
        uploaded_again += 1;
    }
    fixture.send_items(late).await;

    let deliveries = storm.len() + uploaded_again;
    fixture
        .wait_until_loaded(items.len(), 0, scale.timeout)
        .await;
    let found = fixture.assert_rows_exact(&expected).await;
    assert!(fixture.dead_letters().await.is_empty());
    // The check sees a doubled row: the target has no unique index, as in Redshift.
    let client = faults::warehouse().await.expect("connect");
    client
        .execute(
            &format!(
                "INSERT INTO {table} SELECT * FROM {table} LIMIT 1",
                table = fixture.order_items_table()
            ),
            &[],
        )
        .await
        .expect("insert a copy of a row");
    let report = fixture.compare_rows(&expected).await;
    assert_eq!(report.doubled.len(), 1, "{report:?}");
    println!(
        "FAULTS storm sink={sink:?} seed={seed} items={} deliveries={deliveries} processors=2 rows_expected={} rows_found={found}",
        items.len(),
        expected.len()
    );
}

/// The example catalog with `gift_wrap` (of `gift_type`) added to `order_items`, its input
/// and its transform's output.
fn with_gift_wrap(catalog: String, gift_type: &str) -> String {
    let column = "name = \"unit_price\"\ntype = \"decimal(12,2)\"\nnullable = false\n";
    let output = "CAST(quantity * unit_price AS DECIMAL(14,2)) AS line_total\n";
    assert!(catalog.contains(column) && catalog.contains(output));
    catalog
        .replace(
            column,
            &format!("{column}\n[[datasets.order_items.columns]]\nname = \"gift_wrap\"\ntype = \"{gift_type}\"\n"),
        )
        .replace(output, &format!("{}, gift_wrap\n", output.trim_end()))
}

/// A restart with a column added to the catalog adds it to the loaded table: the rows
/// already there hold NULL, the next files fill it. A restart that changes the column's
/// type stops at start-up, naming table, column and both types, and takes no work: the
/// message waiting stays in the queue and nothing reaches the dead-letter queue.
async fn a_catalog_change_evolves_the_table_on_restart_and_a_type_change_is_refused(sink: Sink) {
    let fixture = FaultFixture::new(PROCESSOR, "evolve", MAX_RECEIVE_COUNT, sink).await;
    let config = fixture.config(&aws_endpoint());
    let csv = |header: &str, rows: &[&str]| format!("{header}\n{}\n", rows.join("\n")).into_bytes();
    let header = "order_id,line_number,product_sku,quantity,unit_price";
    let before = fixture
        .upload(
            "landing/order_items/before.csv",
            csv(header, &["1,1,SKU-1,2,9.99"]),
        )
        .await;
    fixture.send_items(&[before]).await;
    let processor = fixture.start_processor(&config);
    fixture
        .wait_until_loaded(1, 0, Duration::from_secs(120))
        .await;
    processor.kill();

    fixture.write_catalog(|catalog| with_gift_wrap(catalog, "string"));
    let after = fixture
        .upload(
            "landing/order_items/after.csv",
            csv(&format!("{header},gift_wrap"), &["2,1,SKU-2,1,5.00,ribbon"]),
        )
        .await;
    fixture.send_items(&[after]).await;
    let processor = fixture.start_processor(&config);
    fixture
        .wait_until_loaded(2, 0, Duration::from_secs(120))
        .await;
    processor.kill();
    let client = faults::warehouse().await.expect("connect");
    let rows: Vec<(i64, Option<String>)> = client
        .query(
            &format!(
                "SELECT order_id, gift_wrap FROM {} ORDER BY order_id",
                fixture.order_items_table()
            ),
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(rows, [(1, None), (2, Some("ribbon".to_owned()))]);

    fixture.write_catalog(|catalog| with_gift_wrap(catalog, "int64"));
    let waiting = fixture
        .upload(
            "landing/order_items/waiting.csv",
            csv(header, &["3,1,SKU-3,1,1.00"]),
        )
        .await;
    fixture.send_items(&[waiting]).await;
    let mut processor = fixture.start_processor(&config);
    let (status, log) = processor
        .wait_for_exit(Duration::from_secs(60))
        .expect("start-up refuses the change");
    assert!(!status.success());
    let table = fixture.order_items_table();
    assert!(
        log.contains(&format!("{table} (order_items)"))
            && log.contains("refused: column gift_wrap"),
        "{log}"
    );
    assert!(fixture.dead_letters().await.is_empty());
    // Still queued (a long poll the killed processor left open may hold it in flight for a
    // visibility timeout) and not loaded.
    let (visible, in_flight) = queue_depth(&fixture.clients.sqs, &fixture.queue_url).await;
    assert_eq!(
        visible + in_flight,
        1,
        "the waiting message is still queued"
    );
    assert_eq!(fixture.ledger_entries().await, Some(2));
}

/// The invalid work-item fixtures (future version, truncated JSON, unknown kinds …) and
/// items whose files cannot be loaded, each with the reason its dead letter must carry.
async fn poison_messages(fixture: &FaultFixture) -> Vec<(OutgoingMessage, String)> {
    let mut poison = Vec::new();
    let folder = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/tests/fixtures/work_items/invalid"
    );
    let mut names: Vec<_> = std::fs::read_dir(folder)
        .expect("fixtures")
        .map(|entry| entry.expect("entry").path())
        .collect();
    names.sort();
    for path in names {
        let body = std::fs::read_to_string(&path).expect("fixture");
        let reason = shared::envelope::WorkItem::from_json(&body)
            .expect_err("an invalid fixture")
            .to_string();
        poison.push((OutgoingMessage::from(body), reason));
    }
    let missing = fixture
        .upload("landing/order_items/deleted.csv", b"order_id\n1\n".to_vec())
        .await;
    fixture
        .clients
        .s3
        .delete_object()
        .bucket(&fixture.bucket)
        .key("landing/order_items/deleted.csv")
        .send()
        .await
        .expect("delete");
    let corrupt = fixture
        .upload(
            "landing/order_items/corrupt.csv.gz",
            b"\x1f\x8b\x08\x00 this is not gzip".to_vec(),
        )
        .await;
    let mut replaced = fixture
        .upload("landing/order_items/replaced.csv", b"old".to_vec())
        .await;
    fixture
        .upload("landing/order_items/replaced.csv", b"new bytes".to_vec())
        .await;
    if let WorkItem::File(file) = &mut replaced {
        file.size = 3;
    }
    let mut unknown = fixture
        .upload("landing/order_items/unrouted.csv", b"a\n1\n".to_vec())
        .await;
    if let WorkItem::File(file) = &mut unknown {
        file.dataset = "no_such_dataset".to_owned();
    }
    let wrong_columns = fixture
        .upload(
            "landing/order_items/wrong columns.csv",
            b"sku;qty\nA;1\n".to_vec(),
        )
        .await;
    for (item, reason) in [
        (missing, "does not exist"),
        (corrupt, "gzip"),
        (replaced, "overwritten since its event"),
        (unknown, "no_such_dataset"),
        (wrong_columns, "no header name is a column of the catalog"),
    ] {
        let body = item.to_json(MessageSizeLimit::default()).expect("json");
        poison.push((OutgoingMessage::from(body), reason.to_owned()));
    }
    poison
}

async fn poison_messages_go_to_the_dlq_with_reasons_and_the_good_ones_load(sink: Sink) {
    let Scenario {
        scale,
        seed,
        mut rng,
        fixture,
        config,
    } = Scenario::start(PROCESSOR, "poison", sink).await;
    let (items, expected) = fixture
        .upload_order_items(scale.files / 2, scale.rows_per_file)
        .await;
    let poison = poison_messages(&fixture).await;
    let mut messages: Vec<OutgoingMessage> = items
        .iter()
        .map(|item| {
            item.to_json(MessageSizeLimit::default())
                .expect("json")
                .into()
        })
        .chain(poison.iter().map(|(message, _)| message.clone()))
        .collect();
    messages.shuffle(&mut rng);
    fixture.send(messages).await;

    let _processor = fixture.start_processor(&config);
    fixture
        .wait_until_loaded(items.len(), poison.len() as u64, scale.timeout)
        .await;
    let found = fixture.assert_rows_exact(&expected).await;
    let mut dead = fixture.dead_letters().await;
    let mut unexplained = Vec::new();
    for (message, reason) in &poison {
        match dead.iter().position(|(body, _)| *body == message.body) {
            Some(index) => {
                let (_, got) = dead.swap_remove(index);
                let got = got.unwrap_or_default();
                if !got.contains(reason.as_str()) {
                    unexplained.push(format!("{}: {got:?} lacks {reason:?}", message.body));
                }
            }
            None => unexplained.push(format!("{}: not in the DLQ", message.body)),
        }
    }
    assert!(unexplained.is_empty(), "{unexplained:#?}");
    assert!(dead.is_empty(), "good items dead-lettered: {dead:?}");
    println!(
        "FAULTS poison sink={sink:?} seed={seed} good_items={} poison={} max_receive_count={MAX_RECEIVE_COUNT} rows_expected={} rows_found={found}",
        items.len(),
        poison.len(),
        expected.len()
    );
}
