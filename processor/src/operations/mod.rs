//! What the operator commands do, apart from printing: checking a catalog, enqueueing a
//! prefix (backfill), reading a stream window again (replay), moving dead letters back.

pub mod backfill;
pub mod check;
pub mod redrive;
pub mod replay;
