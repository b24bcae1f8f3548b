//! One module per HTTP resource.

pub mod tasks;
