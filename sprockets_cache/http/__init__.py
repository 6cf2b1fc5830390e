"""The HTTP layer: the ASGI app and everything a request passes through. It reaches Redis only through
the store layer, never builds a key, and imports nothing from ops."""
