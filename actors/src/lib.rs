//! mesh7-actors: one module per subsystem actor, each behind a cloneable handle.

pub mod cli;
pub mod clock;
pub mod policy;
pub mod rate_limit;
pub mod trace;
