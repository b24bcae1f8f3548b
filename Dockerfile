# The `axontask` binary, for docker-compose.yml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p axontask

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl util-linux \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/axontask /usr/local/bin/axontask
ENTRYPOINT ["axontask"]
