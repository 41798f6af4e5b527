//! mesh7-actors: one module per subsystem actor, each behind a cloneable handle.

pub mod approvals;
pub mod cli;
pub mod clock;
pub mod grants;
pub mod halts;
pub mod memory;
pub mod notify;
pub mod pins;
pub mod policy;
pub mod rate_limit;
pub mod ssrf;
pub mod store;
pub mod supervisor;
pub mod taint;
pub mod trace;
pub mod upstream;
