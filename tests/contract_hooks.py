"""Which "valid request rejected" failures schemathesis should leave out, and nothing else.

schemathesis sends requests the document calls valid ("positive") and expects them accepted. JSON
Schema cannot compare two values, so the document cannot state three rules of docs/api.md:
`from` <= `to`, outside_diameter > pitch_diameter, and chart_data columns of equal length. A request
that breaks one of them is rightly 422. Two answers depend on what the server holds, not on the
request's form: 412 to an If-Match that names another version, and 422 to an Idempotency-Key
already used with another body. Every request is still sent as generated and every check runs;
this hook only drops the positive-data failure of a response that refuses for one of these reasons
alone (each error it lists is one of them). Any other refusal of a valid request still fails.

It also drops that failure for a case schemathesis labels positive while one of its parts was
generated to break the document (its coverage phase keeps a negative header, say `If-None-Match: 0`,
in cases that vary the path): such a request is not valid, and its 400 is right.
"""

import json
from typing import Any

import schemathesis
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import Failure
from schemathesis.core.transport import Response
from schemathesis.hooks import HookContext
from schemathesis.openapi.checks import RejectedPositiveData

# The messages the server gives for the cross-field rules and the reused key (models.py, web.py).
CROSS_FIELD_ERRORS = {
    ("query.from", "must not be after to"),
    ("outside_diameter", "must be greater than pitch_diameter"),
    ("header.Idempotency-Key", "was already used with a different request body"),
}
UNEQUAL_COLUMNS = "must have as many entries as sprocket_production_actual and sprocket_production_goal"


def _breaks_a_generated_part(case: Case) -> bool:
    meta = case.meta
    return meta is not None and any(part.mode == GenerationMode.NEGATIVE for part in meta.components.values())


def _refused_only_for_cross_field_rules(response: Response) -> bool:
    try:
        errors: list[dict[str, Any]] = json.loads(response.content)["errors"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(errors) and all(
        (error["field"].removeprefix("chart_data."), error["message"]) in CROSS_FIELD_ERRORS
        or error["message"] == UNEQUAL_COLUMNS
        for error in errors
    )


@schemathesis.hook
def filter_failure(context: HookContext, failure: Failure, case: Case, response: Response) -> bool:
    """False (leave it out) for a refused valid request whose refusal the document cannot express."""
    if not isinstance(failure, RejectedPositiveData):
        return True
    if _breaks_a_generated_part(case):
        return False
    if response.status_code == 412:
        return not any(name.lower() == "if-match" for name in case.headers or {})
    if response.status_code == 422:
        return not _refused_only_for_cross_field_rules(response)
    return True
