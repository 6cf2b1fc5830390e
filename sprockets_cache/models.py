"""Request models: the one place that says what a valid body is; and response models, which only document.

Strict mode everywhere: `5.5` is not a tooth count and `"5"` is not a length. A number with a zero
fraction (`352.0`) is the integer it equals, as JSON Schema (and so the OpenAPI document) has it:
`validated()` lets it through where an integer is asked for.
Handlers write responses as dicts with orjson; the response models below feed openapi.py alone.
"""

from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    MISSING,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

Model = TypeVar("Model", bound=BaseModel)

# Production counts are stored as unsigned 32-bit integers; sums of a million
# of them stay exact in a double.
MAX_COUNT = 2**32 - 1
# 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
MAX_TIME = 253_402_300_799
MAX_TEETH = 2**31 - 1
# Ids come from INCR, which stops at 2**63 - 1.
MAX_ID = 2**63 - 1

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
UnixTime = Annotated[int, Field(ge=0, le=MAX_TIME, description="unix seconds")]
Teeth = Annotated[int, Field(ge=1, le=MAX_TEETH)]
Length = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SprocketIn(_Strict):
    teeth: Teeth
    pitch_diameter: Length
    outside_diameter: Annotated[Length, Field(description="must be greater than pitch_diameter")]
    pitch: Length

    @field_validator("outside_diameter")
    @classmethod
    def _tips_outside_pitch_circle(cls, value: float, info: ValidationInfo) -> float:
        pitch_diameter = info.data.get("pitch_diameter")
        if pitch_diameter is not None and value <= pitch_diameter:
            raise PydanticCustomError("tips_inside_pitch_circle", "must be greater than pitch_diameter")
        return value


def fields(sprocket: SprocketIn) -> dict[str, Any]:
    """The fields as model_dump() gives them, without its cost on every write: the model is flat."""
    return sprocket.__dict__


class SprocketPatch(_Strict):
    """A JSON merge patch (RFC 7396) of a sprocket: the fields to change. A sprocket needs every field, so
    none may be removed (null); the merged sprocket must pass SprocketIn."""

    teeth: Teeth | MISSING = MISSING
    pitch_diameter: Length | MISSING = MISSING
    outside_diameter: Length | MISSING = MISSING
    pitch: Length | MISSING = MISSING


class ChartData(_Strict):
    """Columns of equal length, one entry a point."""

    sprocket_production_actual: list[Count]
    sprocket_production_goal: list[Count]
    time: list[UnixTime]

    @field_validator("time")
    @classmethod
    def _columns_have_equal_length(cls, value: list[int], info: ValidationInfo) -> list[int]:
        other = [
            len(info.data[name])
            for name in ("sprocket_production_actual", "sprocket_production_goal")
            if name in info.data
        ]
        if any(length != len(value) for length in other):
            raise PydanticCustomError(
                "columns_differ_in_length",
                "must have as many entries as sprocket_production_actual and sprocket_production_goal",
            )
        return value


class FactoryIn(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    chart_data: ChartData | None = None


# Responses: documentation only. Open to fields added later, as clients must be.


class Sprocket(SprocketIn):
    model_config = ConfigDict(extra="ignore")
    id: Id
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Chart(BaseModel):
    """A factory's points as columns, by time; with `bucket`, sums per bucket, which may pass MAX_COUNT."""

    sprocket_production_actual: list[Annotated[int, Field(ge=0)]]
    sprocket_production_goal: list[Annotated[int, Field(ge=0)]]
    time: list[UnixTime]


class Factory(BaseModel):
    id: Id
    name: str
    resolution_s: Annotated[int, Field(ge=1)] = Field(
        description="1: chart_data holds the points as written; else sums over spans of this many seconds "
        "(`bucket`, or the downsampled past: see docs/retention.md)"
    )
    chart_data: Chart


class SprocketPage(BaseModel):
    sprockets: list[Sprocket]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class FactoryPage(BaseModel):
    factories: list[Factory]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class Summary(BaseModel):
    id: Id
    points: Annotated[int, Field(ge=0)]
    actual_total: Annotated[int, Field(ge=0)]
    goal_total: Annotated[int, Field(ge=0)]
    attainment: Annotated[float, Field(ge=0)] | None = Field(description="actual_total / goal_total; null if 0 goal")
    first_time: UnixTime | None
    last_time: UnixTime | None


class Written(BaseModel):
    written: Annotated[int, Field(ge=0, description="points written")]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable", "refusing_writes"]
    # With refusing_writes: out_of_memory, read_only, persistence_failing or no_replicas.
    reason: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    detail: str


class FieldError(BaseModel):
    field: str = Field(description='dotted path of the bad field ("" for the whole body, "query.NAME" for a query)')
    message: str


class ValidationProblem(Problem):
    errors: list[FieldError]


def error_list(error: ValidationError, limit: int = 50) -> list[dict[str, Any]]:
    """pydantic's errors as `{"field", "message"}`, field a dotted path ("" for the whole body)."""
    return [
        {"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
        for item in error.errors(include_url=False)[:limit]
    ]


def validated(model: type[Model], data: Any) -> Model:
    """`model.model_validate(data)`, where a float with a zero fraction given for an integer counts as that
    integer (5.5, true and "5" stay errors). Strict validation runs first, so a body of integers pays nothing."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        places = [
            item["loc"]
            for item in error.errors(include_url=False)
            if item["type"] == "int_type" and isinstance(item["input"], float) and item["input"].is_integer()
        ]
        if not places:
            raise
    # A copy: the caller's data (an idempotency digest is taken from it) stays as it was sent.
    fixed = orjson.loads(orjson.dumps(data))
    for loc in places:
        parent = fixed
        for part in loc[:-1]:
            parent = parent[part]
        parent[loc[-1]] = int(parent[loc[-1]])
    return model.model_validate(fixed)
