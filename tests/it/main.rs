//! End-to-end tests: real NATS JetStream, PostgreSQL and Redis, the real `axontask` binary.

mod accounts;
mod audit;
mod bad_input;
mod control;
mod crash;
mod fairness;
mod fanout;
mod http_limits;
mod limits;
mod load;
mod mcp_bad_input;
mod mcp_clients;
mod mcp_conformance;
mod mcp_resources;
mod mcp_streams;
mod nats_auth;
mod ops;
mod pipeline;
mod quotas;
mod reads;
mod resume;
mod runs;
mod sandbox;
mod stream_loss;
mod timeouts;
mod webhooks;
