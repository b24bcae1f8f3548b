//! Sign-in: users register (their own tenant, as its owner), log in, refresh and log out;
//! sessions hand out access and refresh tokens (`shared::tokens`).

pub mod passwords;
pub mod store;
pub mod throttle;
