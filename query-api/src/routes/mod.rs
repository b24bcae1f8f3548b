//! One module per HTTP resource.

pub mod stream;
pub mod tasks;
