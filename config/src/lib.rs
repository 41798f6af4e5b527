//! mesh7-config: the YAML schema, loading (env interpolation, `policy_dir`), validation with
//! path-aware errors, and the policy language (globs, conditions, evaluation).
//!
//! Pure: no actix, no tokio, no I/O beyond reading files.

pub mod condition;
pub mod duration;
pub mod glob;
mod interpolate;
pub mod load;
pub mod policy;
pub mod redact;
pub mod schema;
mod validate;

pub use glob::Glob;
pub use load::{ConfigError, ConfigErrors, LoadedConfig, load, load_str};
pub use policy::{Decision, PolicyError, PolicySet, Settled, ToolHints};
pub use schema::*;
