//! Sign-in: users register (their own tenant, as its owner), log in, refresh and log out;
//! sessions hand out access and refresh tokens (`shared::tokens`); owners and admins
//! manage the tenant's members.

pub mod members;
pub mod passwords;
pub mod store;
pub mod throttle;
