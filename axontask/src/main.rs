//! The `axontask` binary.

fn main() {}
