//! The processor: consumes work items, transforms them with DataFusion and loads the
//! warehouse; also the operator CLI (catalog check, redrive, backfill, replay).

pub mod announce;
pub mod backfill;
pub mod check;
pub mod cli;
pub mod demo;
pub mod health;
pub mod lineage;
pub mod local;
pub mod objects;
pub mod read;
pub mod redrive;
pub mod replay;
pub mod sdk_object;
pub mod service;
pub mod timefmt;
pub mod transform;
pub mod typing;
pub mod warehouse;
pub mod worker;
