# syntax=docker/dockerfile:1
# Build stage: the same `npm ci` and `npm run build` as the README quick start and CI.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bench ./bench
RUN npm run build && npm prune --omit=dev

# Runtime stage: only the built relay and its production dependencies, as a non-root user.
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json relay.config.yaml ./
RUN mkdir -p /var/spool/smarthop /etc/smarthop && chown -R node:node /var/spool/smarthop
USER node
# Mount your config at /etc/smarthop/relay.config.yaml (spool.dir: /var/spool/smarthop in it).
VOLUME ["/var/spool/smarthop"]
EXPOSE 2525 9465
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s CMD node -e "fetch('http://127.0.0.1:9465/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "dist/src/cli.js"]
CMD ["start", "-c", "/etc/smarthop/relay.config.yaml"]
