"""What schemathesis cannot read in /openapi.json, taught to the requests it sends as valid ("positive").

JSON Schema cannot compare two values, so the document cannot state three rules of docs/api.md:
outside_diameter > pitch_diameter, chart_data columns of equal length, and `from` <= `to`. Nor can
it tell 5 from 5.0, which to JSON Schema are one integer and to the API (strict) are not. Two
headers are only valid against the server's state: an If-Match that names the current ETag, and an
Idempotency-Key not yet used with another body. A positive request that breaks one of these would
rightly get 412 or 422, which schemathesis counts as a rejected valid request; so positive requests
are made to keep them, just before they are sent (after the stateful phase has merged values from
earlier responses in). Negative requests are left alone: they still break every rule, and every
check stays on. Each change keeps the request valid under the document's schemas.
"""

import math
import uuid
from collections.abc import MutableMapping
from typing import Any

import schemathesis
from schemathesis import Case, GenerationMode
from schemathesis.hooks import HookContext

COLUMNS = ("sprocket_production_actual", "sprocket_production_goal", "time")
DIAMETERS = ("pitch_diameter", "outside_diameter")
# Floats at or past this are not sent as integers: no integer field goes that high, and a JSON
# number with hundreds of digits is not what the generator meant.
MAX_EXACT_FLOAT = 2**53


def _whole_numbers_as_integers(value: Any) -> Any:
    """5.0 becomes 5 (a number field takes 5 as well), so an integer field gets a JSON integer."""
    if isinstance(value, float) and value.is_integer() and abs(value) < MAX_EXACT_FLOAT:
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers_as_integers(item) for item in value]
    if isinstance(value, dict):
        return {name: _whole_numbers_as_integers(item) for name, item in value.items()}
    return value


def _equal_columns(chart_data: Any) -> None:
    if isinstance(chart_data, dict) and all(isinstance(chart_data.get(name), list) for name in COLUMNS):
        shortest = min(len(chart_data[name]) for name in COLUMNS)
        for name in COLUMNS:
            del chart_data[name][shortest:]


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _order_diameters(body: dict[str, Any], method: str) -> None:
    """Tips outside the pitch circle. A PATCH naming one diameter meets the stored other one, which
    is not known here, so it loses that field."""
    present = [name for name in DIAMETERS if name in body]
    if method == "PATCH" and len(present) == 1:
        del body[present[0]]
    elif len(present) == 2 and all(_is_number(body[name]) for name in DIAMETERS):
        low, high = sorted(float(body[name]) for name in DIAMETERS)
        if low == high:
            # Both stay finite and > 0: high < the largest float, or else low > the smallest.
            high = math.nextafter(high, math.inf) if high < 1e308 else high
            low = math.nextafter(low, 0.0) if low == high else low
        body["pitch_diameter"], body["outside_diameter"] = low, high


def _order_range(query: MutableMapping[str, Any]) -> None:
    """Some phases hold query values as the text they will be on the wire."""
    values = [query.get(name) for name in ("from", "to")]
    if all(isinstance(value, int | str) and str(value).isdigit() for value in values):
        first, last = values
        if int(str(first)) > int(str(last)):
            query["from"], query["to"] = last, first


@schemathesis.hook
def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    if isinstance(case.body, dict):
        case.body = _whole_numbers_as_integers(case.body)
        _equal_columns(case.body)
        _equal_columns(case.body.get("chart_data"))
        _order_diameters(case.body, case.method.upper())
    if isinstance(case.query, MutableMapping):
        _order_range(case.query)
    if isinstance(case.headers, MutableMapping):
        if "If-Match" in case.headers:
            case.headers["If-Match"] = "*"
        if "Idempotency-Key" in case.headers:
            case.headers["Idempotency-Key"] = uuid.uuid4().hex
