//! `processor put`: JSON lines into the local platform's stream, as a producer puts to
//! Kinesis; `processor dev` reads and loads them.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use processor::local::Layout;
use processor::local::put::{PutOptions, put_lines};
use shared::config::PlatformConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The local platform's folder (default: [local] dir of the config, else demo-data).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The stream to put to: the `stream` route of a dataset in the catalog `dev` runs.
    #[arg(long)]
    stream: String,
    /// A top-level field whose value is each record's partition key (records with one key
    /// stay in order); by default records spread over the shards.
    #[arg(long)]
    partition_key: Option<String>,
    /// JSON lines, one record each; `-` or nothing reads standard input.
    file: Option<PathBuf>,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let options = PutOptions {
        layout: Layout {
            dir: super::local_dir(config, args.dir),
        },
        stream: args.stream,
        partition_key_field: args.partition_key,
    };
    let input: Box<dyn BufRead> = match args.file.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
    };
    let started = Instant::now();
    let mut last_told = Instant::now();
    let mut progress = |put: u64| {
        if last_told.elapsed().as_secs() >= 1 {
            last_told = Instant::now();
            eprintln!("put {put} record(s) ({:.0}/s)", rate(put, started));
        }
    };
    let summary = put_lines(&options, input, &mut progress).await?;
    for (line, why) in summary.refused.iter().take(20) {
        eprintln!("line {line} not put: {why}");
    }
    if summary.refused.len() > 20 {
        eprintln!("… and {} more line(s) not put", summary.refused.len() - 20);
    }
    println!(
        "put {} record(s) into stream {} in {:.1} s ({:.0}/s); {} line(s) not put",
        summary.put,
        options.stream,
        started.elapsed().as_secs_f64(),
        rate(summary.put, started),
        summary.refused.len()
    );
    Ok(super::exit_code(summary.refused.is_empty()))
}

fn rate(count: u64, since: Instant) -> f64 {
    count as f64 / since.elapsed().as_secs_f64().max(0.001)
}
