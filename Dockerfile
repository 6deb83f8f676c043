# tokenswarm image: one image, three roles (see docker-compose.yml):
#   tokenswarm sim | tokenswarm worker | locust -f /app/locustfiles/llm.py --master
#
# Two ways to get the binary, chosen with --target:
#   prebuilt (the default, offline): copies the host's release binary
#     (target/release/tokenswarm, from scripts/setup or
#     `cargo build --release --locked`), which links against glibc, so the
#     base must be Debian bookworm (glibc 2.36). docker/build-image does this,
#     and also makes the base and the wheels. No Rust toolchain inside.
#   source: builds the binary in a Rust builder stage (RUST_IMAGE, default
#     rust:1.95-bookworm, and crates.io), for Docker engines that reach a
#     registry:
#       docker build --target source --build-arg BASE=debian:bookworm-slim -t tokenswarm:local .
#     (or FROM_SOURCE=1 BASE=debian:bookworm-slim docker/build-image).
# BASE defaults to the image made by scripts/docker-base (no registry here);
# with a registry, `--build-arg BASE=debian:bookworm-slim` works too.
#
# The source stages come after `prebuilt` on purpose: Docker's legacy
# builder (no BuildKit, as on this machine) runs every stage up to the
# target, so `--target prebuilt` never touches RUST_IMAGE. The last stage
# is `prebuilt` again, so with BuildKit a plain `docker build .` (which
# skips unused stages) is the prebuilt image as well.
ARG BASE=tokenswarm/base:bookworm
ARG RUST_IMAGE=rust:1.95-bookworm
FROM ${BASE} AS base

# The debootstrapped base has python3 already; bookworm-slim needs apt.
RUN if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
      && rm -rf /var/lib/apt/lists/*; fi

# Pinned Locust master packages into a venv, in a stage of its own so the
# wheels stay out of the final image. Offline from docker/wheels (downloaded
# on the host by docker/build-image) when present, else from PyPI.
FROM base AS venv
COPY locustfiles/requirements.txt /app/locustfiles/requirements.txt
COPY docker/wheels/ /tmp/wheels/
RUN python3 -m venv /opt/venv \
    && if ls /tmp/wheels/*.whl >/dev/null 2>&1; then \
         /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels \
           -r /app/locustfiles/requirements.txt; \
       else /opt/venv/bin/pip install --no-cache-dir -r /app/locustfiles/requirements.txt; fi

# Everything but the tokenswarm binary.
FROM base AS runtime
COPY --from=venv /opt/venv /opt/venv
COPY locustfiles/ /app/locustfiles/
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tokenswarm
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# 8000 sim, 8089 Locust web UI, 5557 Locust master bind port.
EXPOSE 8000 8089 5557
CMD ["tokenswarm", "--help"]

# Offline: the host's release binary.
FROM runtime AS prebuilt
COPY target/release/tokenswarm /usr/local/bin/tokenswarm
USER tokenswarm

# From source: the same release build as the host's, in a Rust image.
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src/ src/
# `tokenswarm init` embeds these (include_str! in src/standalone).
COPY examples/tokenflood/ examples/tokenflood/
RUN cargo build --release --locked --bin tokenswarm \
    && strip --strip-debug target/release/tokenswarm

FROM runtime AS source
COPY --from=builder /src/target/release/tokenswarm /usr/local/bin/tokenswarm
USER tokenswarm

# Default target (BuildKit): the offline, prebuilt image.
FROM prebuilt
