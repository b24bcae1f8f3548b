//! One module per HTTP resource.

pub mod auth;
pub mod keys;
pub mod members;
pub mod tasks;
pub mod webhooks;
