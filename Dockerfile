# syntax=docker/dockerfile:1
#
# sqlvigil container image: build the one binary, ship it on a slim Debian.
#   docker build -t sqlvigil .
#   docker run --rm -p 4317:4317 -p 4318:4318 -p 8080:8080 sqlvigil
# runs `sqlvigil run --config /etc/sqlvigil/sqlvigil.yaml`: config/sqlvigil.yaml
# (listens on 0.0.0.0, stores in /var/lib/sqlvigil, the shipped rules) copied
# into the image. Mount your own directory over /etc/sqlvigil to change it
# (-v "$PWD/config:/etc/sqlvigil:ro"), or override keys with
# SQLVIGIL_<SECTION>__<KEY> variables (-e SQLVIGIL_BUS__KIND=kafka …).

# ---- build ---------------------------------------------------------------
# Same Debian release as the runtime stage, so the binary's glibc matches.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target/ between builds (BuildKit);
# the binary is copied out of the cached target/ inside the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sqlvigil \
 && install -D -m 0755 target/release/sqlvigil /out/sqlvigil

# ---- runtime -------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: HTTPS to PagerDuty, Teams, Elastic, LLM endpoints (rustls
# reads the system roots).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Fixed uid/gid so volume ownership is predictable across rebuilds.
RUN groupadd --system --gid 10001 sqlvigil \
 && useradd --system --uid 10001 --gid sqlvigil --home-dir /var/lib/sqlvigil \
      --no-create-home --shell /usr/sbin/nologin sqlvigil \
 && install -d -o sqlvigil -g sqlvigil -m 0750 /var/lib/sqlvigil \
 && install -d -m 0755 /etc/sqlvigil
COPY --from=builder /out/sqlvigil /usr/local/bin/sqlvigil
# The config the CMD below names, and the rules file it points at
# (rules_file: /etc/sqlvigil/rules.example.yaml).
COPY config/sqlvigil.yaml /etc/sqlvigil/sqlvigil.yaml
COPY config/rules.example.yaml /etc/sqlvigil/rules.example.yaml

USER sqlvigil:sqlvigil
WORKDIR /var/lib/sqlvigil
# Parquet + SQLite store; a named volume mounted here inherits the ownership.
VOLUME ["/var/lib/sqlvigil"]
# 4317 OTLP/gRPC, 4318 OTLP/HTTP, 8080 REST API (+ /health, /metrics).
EXPOSE 4317 4318 8080
ENTRYPOINT ["sqlvigil"]
CMD ["run", "--config", "/etc/sqlvigil/sqlvigil.yaml"]
