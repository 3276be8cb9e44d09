#!/usr/bin/env bash
# Start PostgreSQL and Redis on 127.0.0.1 when they are installed but not running.
# On a machine without them the tests that need them fail with a message that
# says how to start them; see the README.
set -euo pipefail

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_ready() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }

if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_ready; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
fi
if command -v redis-server >/dev/null 2>&1 && ! redis_ready; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
for _ in $(seq 1 30); do
    { ! command -v pg_isready >/dev/null 2>&1 || pg_ready; } && \
        { ! command -v redis-cli >/dev/null 2>&1 || redis_ready; } && break
    sleep 1
done
