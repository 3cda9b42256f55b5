//! PostgreSQL crashed (immediate shutdown, as in a crash or a failover) and started again
//! at random points while the `processor serve` binary loads: the processor stays up,
//! takes no work while the warehouse is down (so the outages do not use up the messages'
//! receives before the dead-letter queue), and the warehouse ends with every row once.
//!
//! The server is the one `scripts/peers.sh` started, controlled through its `pg-ctl`
//! script; this is the only test in its binary, as the outages would fail other tests.

use std::time::Duration;

use faults::{MAX_RECEIVE_COUNT, Scenario};
use rand::Rng;
use test_support::eventually;
use test_support::faults;

/// Runs `pg-ctl crash|start`; dropping it starts the server again if a test failed with
/// it down, so the tests that follow find it up.
struct Server {
    control: String,
    down: bool,
}

impl Server {
    fn new() -> Self {
        let control = std::env::var("TEST_INGEST_POSTGRES_CTL").unwrap_or_else(|_| {
            panic!("TEST_INGEST_POSTGRES_CTL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
        });
        Self {
            control,
            down: false,
        }
    }

    fn run(&mut self, action: &str) {
        let output = std::process::Command::new(&self.control)
            .arg(action)
            .output()
            .expect("run pg-ctl");
        assert!(
            output.status.success(),
            "pg-ctl {action}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.down = action == "crash";
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.down {
            self.run("start");
        }
    }
}

/// Waits up to `limit` for a statement of a load to be running; says whether one was.
async fn load_running(limit: Duration) -> bool {
    let Some(client) = faults::warehouse().await else {
        return false;
    };
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        let running: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND query ~* '^\\s*(COPY|MERGE|INSERT|LOCK)'",
                &[],
            )
            .await
            .map(|row| row.get(0))
            .unwrap_or(0);
        if running > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// The `processor` binary these tests run.
const PROCESSOR: &str = env!("CARGO_BIN_EXE_processor");

#[tokio::test]
async fn postgres_crashes_mid_load_lose_nothing_and_double_nothing() {
    let mut server = Server::new();
    let Scenario {
        scale,
        seed,
        mut rng,
        fixture,
        config,
    } = Scenario::start(
        PROCESSOR,
        "pg-restart",
        test_support::faults::Sink::Postgres,
    )
    .await;
    // One load per file, so loads run throughout the crashes: micro-batched, these small
    // files load in a few transactions within seconds, before a crash can land in one.
    let text = std::fs::read_to_string(&config).expect("read config");
    let text = text.replacen(
        "[processor]\n",
        "[processor]\nbatch_small_file_bytes = 0\n",
        1,
    );
    std::fs::write(&config, text).expect("write config");
    let (items, expected) = fixture
        .upload_order_items(scale.files * 2, scale.rows_per_file)
        .await;
    fixture.send_items(&items).await;

    let mut processor = fixture.start_processor(&config);
    eventually("the first loads", Duration::from_secs(60), || async {
        (fixture.ledger_entries().await? > 0).then_some(())
    })
    .await;
    let mut crashes = 0;
    let mut during_loads = 0;
    let mut downtime = Duration::ZERO;
    for crash in 0..scale.faults {
        let loaded = fixture.ledger_entries().await.unwrap_or(0);
        if loaded == items.len() as i64 {
            break;
        }
        // Crash while a load's statement runs (a COPY, MERGE, INSERT or the ledger lock),
        // at a random moment into it; if none starts within 5 s, crash anyway.
        let busy = load_running(Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
        server.run("crash");
        crashes += 1;
        if busy {
            during_loads += 1;
        }
        // The first outage outlasts the retry backoffs of five receives (1+2+4+4 s), the
        // rest are short.
        let down_for = if crash == 0 {
            Duration::from_secs(16)
        } else {
            Duration::from_millis(rng.random_range(200..3_000))
        };
        downtime += down_for;
        tokio::time::sleep(down_for).await;
        server.run("start");
        processor.assert_running();
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_500))).await;
    }
    fixture
        .wait_until_loaded(items.len(), 0, scale.timeout)
        .await;
    processor.assert_running();
    let found = fixture.assert_rows_exact(&expected).await;
    let dead = fixture.dead_letters().await;
    assert!(
        dead.is_empty(),
        "outages pushed good items to the DLQ (max receive count {MAX_RECEIVE_COUNT}): {dead:?}"
    );
    assert!(
        during_loads > 0,
        "no crash landed during a load: the scenario proved nothing"
    );
    println!(
        "FAULTS postgres seed={seed} crashes={crashes} during_loads={during_loads} downtime_ms={} items={} rows_expected={} rows_found={found}",
        downtime.as_millis(),
        items.len(),
        expected.len()
    );
}
