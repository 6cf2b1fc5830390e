"""The commands of `python -m sprockets_cache`: serving, seeding, migration, export, the embedded
Redis and API keys. The top layer: it may use http and store."""
