//! End-to-end tests: real NATS JetStream, PostgreSQL and Redis, the real `axontask` binary.

mod pipeline;
