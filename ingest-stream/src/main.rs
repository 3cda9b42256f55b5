use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("error: {}", ingest_stream::NOT_BUILT);
    ExitCode::FAILURE
}
