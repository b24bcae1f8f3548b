//! One module per HTTP resource.

pub mod audit;
pub mod stream;
pub mod tasks;
pub mod usage;
