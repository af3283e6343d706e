# syntax=docker/dockerfile:1
# smarthop container image. Build: docker build -t smarthop .   (podman: podman build --format docker -t smarthop .)
# Run:  see docs/operations.md, "In a container"
# (config at /etc/smarthop/relay.config.yaml, spool volume at /var/spool/smarthop).
#
# BASE: any Debian-based image with Node.js 20 (node, npm) on PATH, a `node` user (uid 1000) and CA
# certificates npm trusts. The official one is the default; where no registry is reachable,
# deploy/container/build-base.sh assembles one locally (--build-arg BASE=localhost/smarthop-base:…).
ARG BASE=node:20-bookworm-slim

# Build stage: the same `npm ci` and `npm run build` as the README quick start and CI.
FROM ${BASE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build -- --incremental false && npm prune --omit=dev

# Runtime stage: only the built relay and its production dependencies, as the non-root `node` user.
FROM ${BASE}
# MALLOC_*: glibc's allocator gives freed Buffers back to the system (docs/operations.md, "Starting it").
ENV NODE_ENV=production \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=65536 \
    SMARTHOP_HEALTH_URL=http://127.0.0.1:9465/healthz
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json README.md ./
# A working container config (listens on 0.0.0.0, admin token from $SMARTHOP_API_TOKEN); mount your own over it.
COPY deploy/relay.container.yaml /etc/smarthop/relay.config.yaml
RUN mkdir -p /var/spool/smarthop && chown node:node /var/spool/smarthop && chmod 0750 /var/spool/smarthop
USER node
# The queue lives here: a volume, so a new container (an upgrade) picks up what the old one accepted.
VOLUME ["/var/spool/smarthop"]
EXPOSE 2525 9465
# SIGTERM drains (DATA in progress and deliveries under way finish): give it time with `docker stop -t 60`.
STOPSIGNAL SIGTERM
# /healthz answers without the admin token. If http.address uses another port, set SMARTHOP_HEALTH_URL.
# Docker keeps HEALTHCHECK; podman only in the docker format (podman build --format docker).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.SMARTHOP_HEALTH_URL).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# V8's heaps: 2 MB semi-spaces, and the old generation bounded at 512 MiB (src/lifecycle/launch-settings.ts).
ENTRYPOINT ["node", "--max-semi-space-size=2", "--max-old-space-size=512", "dist/src/cli.js"]
CMD ["start", "-c", "/etc/smarthop/relay.config.yaml"]
