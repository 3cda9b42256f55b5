//! Helpers shared by the processor's integration tests (helpers of every crate's tests
//! are in the `test-support` crate).

pub mod browser;
pub mod local;
pub mod orders;
pub mod platform;
pub mod redshift;
pub mod sinks;
pub mod workers;
