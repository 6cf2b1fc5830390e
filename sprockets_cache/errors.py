"""What the store can say went wrong; app.py maps each to a problem+json response."""


class NotFound(Exception):
    """No resource with that id."""


class VersionMismatch(Exception):
    """The resource changed since the version the client named (If-Match)."""


class IdempotencyInProgress(Exception):
    """The first request with this Idempotency-Key is still running; or, `ended`, it can no longer be, yet
    left no response to replay (Redis failed over or went away while it ran)."""

    def __init__(self, ended: bool = False) -> None:
        super().__init__(ended)
        self.ended = ended


class IdempotencyKeyReused(Exception):
    """This Idempotency-Key was first used with another request body."""


class SubscribersFull(Exception):
    """Every connection for event subscribers is taken."""


class BeforeRawWindow(Exception):
    """A write holds a point older than the factory's raw window: that past is kept as sums only."""

    def __init__(self, raw_from: int, retention_s: int) -> None:
        super().__init__(raw_from, retention_s)
        self.raw_from, self.retention_s = raw_from, retention_s


class TooManyPoints(Exception):
    """A read would return more points than a response may hold."""

    def __init__(self, points: int, most: int) -> None:
        super().__init__(points, most)
        self.points, self.most = points, most


class WriteRefused(Exception):
    """Redis refused a write and applied none of it; `reason` is one of connections.REFUSALS' values."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotReplicated(Exception):
    """Redis applied a write, but fewer replicas than required confirmed it in time (WAIT)."""

    def __init__(self, confirmed: int, required: int) -> None:
        super().__init__(confirmed, required)
        self.confirmed, self.required = confirmed, required


class CreateLost(Exception):
    """A create with an Idempotency-Key is not on the master that now serves its hash slot, whose replicas
    confirmed that they have all it has: a failover threw the create away before a replica had it. Nothing
    was created, and the key is free again."""
