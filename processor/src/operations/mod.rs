//! What the operator commands do, apart from printing: checking a catalog, enqueueing a
//! prefix (backfill), reading a stream window again (replay), moving dead letters back,
//! looking at them (dlq), the operator's view of what loaded (status), where one file is (trace).

pub mod backfill;
pub mod check;
pub mod dlq;
pub mod redrive;
pub mod replay;
pub mod status;
pub mod trace;
