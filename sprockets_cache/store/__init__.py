"""The storage layer: everything that speaks to Redis, and the Lua scripts it runs. It never sees a
request and imports nothing from http or ops."""
