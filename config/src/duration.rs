//! Go duration strings (`300ms`, `1.5h`, `2h45m`), parsed and printed as flux7 does.

use std::time::Duration;

/// Parses a Go duration (units ns, us, µs, ms, s, m, h; no days). Negative values are errors.
pub fn parse(s: &str) -> Result<Duration, String> {
    let _ = s;
    Err("unimplemented".to_owned())
}

/// Formats like Go's `Duration.String()` truncated to whole seconds (`4m30s`, `1h0m0s`, `0s`).
pub fn format_secs(d: Duration) -> String {
    let _ = d;
    String::new()
}
