//! cli actor.
