# syntax=docker/dockerfile:1
# The sixpn server image: `sixpn serve` (peer and admin API, internal DNS, and the WireGuard
# gateway when [gateway] is configured). The node image is deploy/node/Dockerfile.
#
#   docker build -t ghcr.io/sixpn/sixpn:latest .
#   docker run -d --name sixpn -p 4280:4280 -p 5354:5354/udp -p 5354:5354/tcp \
#       -v sixpn-data:/var/lib/sixpn ghcr.io/sixpn/sixpn:latest
#   docker exec sixpn sixpn token create --name k8s --group web
#
# It runs as the unprivileged user `sixpn` (uid 10001) with its data (SQLite, the generated admin
# token, the local gateway key) in the volume /var/lib/sixpn. Configure it with SIXPN_* variables
# or mount a config file and pass `serve --config /etc/sixpn/sixpn.toml`.
#
# Gateway mode needs more than the defaults: the WireGuard UAPI socket (/run/wireguard/*.sock)
# is root-only and the interface needs CAP_NET_ADMIN (DNS on port 53 needs
# CAP_NET_BIND_SERVICE), so run it with `--user 0 --cap-add NET_ADMIN --network host` (or
# the equivalent securityContext), next to wireguard-go or the kernel module.

# Build stage: the same `cargo build --bin sixpn` the tests use, in release mode.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY zones ./zones
# Cargo.toml declares the benches, and cargo checks every declared target exists.
COPY benches ./benches
RUN cargo build --release --locked --bin sixpn

FROM debian:bookworm-slim
# wireguard-tools: `wg` for a kernel-module gateway interface; iproute2: addresses and routes;
# ca-certificates: the system trust store (PostgreSQL over TLS). Versions are left to bookworm's
# security updates rather than pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates wireguard-tools iproute2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/sixpn --shell /usr/sbin/nologin sixpn \
 && install -d -o sixpn -g sixpn -m 0700 /var/lib/sixpn
COPY --from=build /src/target/release/sixpn /usr/local/bin/sixpn
# Static zones (records such as gateway.internal) are read only from SIXPN_ZONES_DIR; keep
# them in the image, out of the data volume, so a new image brings new zones.
COPY zones /usr/share/sixpn/zones
WORKDIR /usr/share/sixpn
USER 10001:10001
# DNS answers a query only in the view of an org. A query published with `-p 5354:5354/udp`
# arrives from Docker's bridge (172.16.0.0/12 by default), which no view maps unless told:
# SIXPN_DNS_VIEWS maps it to `personal` here (override it for your networks and orgs); a source
# in no view gets REFUSED with EDE 18 and is counted in sixpn_dns_refused_total{reason="no_view"}.
ENV SIXPN_DATA_DIR=/var/lib/sixpn \
    SIXPN_ZONES_DIR=/usr/share/sixpn/zones \
    SIXPN_DNS_VIEWS=127.0.0.0/8=personal,172.16.0.0/12=personal \
    SIXPN_API_LISTEN=0.0.0.0:4280 \
    SIXPN_DNS_LISTEN=0.0.0.0:5354
VOLUME ["/var/lib/sixpn"]
EXPOSE 4280/tcp 5354/udp 5354/tcp
ENTRYPOINT ["/usr/local/bin/sixpn"]
CMD ["serve"]
