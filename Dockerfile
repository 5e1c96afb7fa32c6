# One image with cairn's binaries: cairn-webhook, cairn-controller, cairn-agent, cairn-certs.
# Static (musl) binaries on an empty base, running as a non-root user, read-only root filesystem
# friendly (the agent writes only under /cairn/tmp, a mounted emptyDir).
# Not built in CI here (the development machines have no Docker engine).

FROM rust:1.95-alpine AS build
RUN apk add --no-cache build-base cmake perl
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p cairn-webhook -p cairn-controller -p cairn-agent -p cairn-certs \
 && mkdir /out \
 && cp target/release/cairn-webhook target/release/cairn-controller \
       target/release/cairn-agent target/release/cairn-certs /out/

FROM alpine:3.22 AS certs
RUN apk add --no-cache ca-certificates

FROM scratch
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ /usr/local/bin/
USER 65534:65534
ENV PATH=/usr/local/bin
ENTRYPOINT ["cairn-controller"]
