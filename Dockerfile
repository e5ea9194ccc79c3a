# fota serve in a container: a static-ish release build on Debian, run as an unprivileged user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Without the default `demo` feature: the served binary does not link the device simulator.
RUN cargo build --release --locked -p fota-cli --no-default-features --bin fota

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/fota fota && mkdir -p /var/lib/fota && chown fota /var/lib/fota
COPY --from=build /src/target/release/fota /usr/local/bin/fota
USER fota
ENV FOTA_LISTEN=0.0.0.0:8080 FOTA_DATA_DIR=/var/lib/fota FOTA_LOG_FORMAT=json
EXPOSE 8080
VOLUME /var/lib/fota
ENTRYPOINT ["/usr/local/bin/fota"]
CMD ["serve"]
