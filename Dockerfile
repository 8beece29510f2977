# Build from source, then run on a slim image with the data directory on a volume.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
RUN cargo build --release --locked --bin roost

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/roost /usr/local/bin/roost
ENV ROOST_DATA_DIR=/data \
    ROOST_LISTEN=0.0.0.0:8008 \
    ROOST_LOG_FORMAT=json
VOLUME /data
EXPOSE 8008
ENTRYPOINT ["roost"]
CMD ["serve"]
