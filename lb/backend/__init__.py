"""The lean upstream HTTP/1.1 client: keep-alive connections per endpoint (pool) and one
asyncio.Protocol per connection with httptools' parser (connection)."""
