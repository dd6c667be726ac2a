"""Tests of the Redis edge run against a real redis-server (tests/redis_server.py)."""

from tests.redis_server import redis_server

__all__ = ["redis_server"]
