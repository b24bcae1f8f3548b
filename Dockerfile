# The `axontask` binary, for docker-compose.yml. It runs as the unprivileged user
# `axontask` under tini, which reaps orphaned processes. A worker with the shell adapter
# needs root (it runs each task under a user id of its own, in the group of `axon-task`,
# and never as root): give that one service `user: root`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p axontask

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl util-linux tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --no-create-home --shell /usr/sbin/nologin axontask \
    && useradd --system --user-group --no-create-home --shell /usr/sbin/nologin axon-task
COPY --from=build /src/target/release/axontask /usr/local/bin/axontask
USER axontask
ENTRYPOINT ["/usr/bin/tini", "--", "axontask"]
