//! Policy evaluation benchmark.
fn main() {}
