//! trace actor.
