//! `processor healthcheck`: asks the health endpoint of the processor running here.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use shared::config::PlatformConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The health endpoint; default: processor.health_address of the config.
    #[arg(long)]
    address: Option<SocketAddr>,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let address = args
        .address
        .or(config.processor.health_address)
        .context("processor.health_address is \"off\": there is no endpoint to ask")?;
    match processor::serve::health::probe(address, Duration::from_secs(3)).await {
        Ok(answer) => {
            println!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}
