//! The processor: consumes work items, transforms them with DataFusion and loads the
//! warehouse; also what the operator commands do (catalog check, backfill, replay,
//! redrive) and the local platform. `docs/architecture.md` maps the modules.

pub mod drafting;
pub mod local;
pub mod objects;
pub mod operations;
pub mod pipeline;
pub mod serve;
pub mod text;
pub mod timefmt;
pub mod warehouse;
pub mod worker;
