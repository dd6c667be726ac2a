"""The status page: `/admin/` (static files in `static/`), `/admin/stats` and the stats ring.

Importing the package imports nothing else, so the middleware can read `lb.admin.page` alone.
"""
