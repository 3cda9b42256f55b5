use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("error: {}", ingest_batch::NOT_BUILT);
    ExitCode::FAILURE
}
