//! One module per HTTP resource.

pub mod auth;
pub mod tasks;
