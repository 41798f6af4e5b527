//! `${VAR}` and `${VAR:-default}` expansion.
