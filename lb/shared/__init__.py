"""The one Redis edge: what several fleetlb instances share (responses, limits) and how fleetlb
behaves when Redis is slow or gone. Only this package imports `redis`."""
