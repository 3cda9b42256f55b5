//! `processor catalog draft`: drafts a catalog entry from files and prints it (or writes
//! it to `--output`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use processor::drafting::{DEFAULT_SAMPLE_ROWS, DraftOptions, draft, render};
use processor::objects::S3Stores;
use shared::aws::load_sdk_config;
use shared::catalog::Catalog;
use shared::config::PlatformConfig;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Draft a dataset's catalog entry from files: local files and folders, or
    /// s3://bucket/key-or-prefix (read with the [aws] settings). Prints TOML that
    /// `processor check` accepts, with a comment per column on what the sample showed.
    Draft(DraftArgs),
}

#[derive(Debug, clap::Args)]
pub struct DraftArgs {
    /// Files, folders or s3:// URLs of one dataset's files.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// The dataset's name; by default the folder, prefix or file named.
    #[arg(long)]
    name: Option<String>,
    /// The warehouse table, schema.table; by default public.<name>.
    #[arg(long)]
    target: Option<String>,
    /// Route the dataset from this Kinesis stream instead of S3 (draft from sample records
    /// as JSON lines).
    #[arg(long)]
    stream: Option<String>,
    /// Rows sampled over all files (the first rows of the first files).
    #[arg(long, default_value_t = DEFAULT_SAMPLE_ROWS)]
    sample_rows: usize,
    /// Write the draft to this file instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
}

pub async fn run(config: &PlatformConfig, command: Command) -> anyhow::Result<ExitCode> {
    let Command::Draft(args) = command;
    let options = DraftOptions {
        inputs: args.inputs,
        name: args.name,
        target: args.target,
        stream: args.stream,
        sample_rows: args.sample_rows,
    };
    let sdk_config = load_sdk_config(&config.aws).await;
    let stores = S3Stores::new(&sdk_config, &config.aws);
    let drafted = draft(&options, &stores).await?;
    let text = render(&drafted);
    // A draft `check` would refuse is a bug here, not the user's to find.
    Catalog::from_toml(&text, "the draft").context("the draft does not read as a catalog")?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "drafted dataset {} ({} column(s)) into {}; check it with `processor check --catalog {}`",
                drafted.name,
                drafted.columns.len(),
                path.display(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
