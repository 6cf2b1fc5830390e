"""Request models: the one place that says what a valid body is.

Strict mode everywhere: `5.0` is not a tooth count and `"5"` is not a length.
"""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

# Production counts are stored as unsigned 32-bit integers; sums of a million
# of them stay exact in a double.
MAX_COUNT = 2**32 - 1
# 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
MAX_TIME = 253_402_300_799
MAX_TEETH = 2**31 - 1

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
UnixTime = Annotated[int, Field(ge=0, le=MAX_TIME, description="unix seconds")]
Length = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SprocketIn(_Strict):
    teeth: Annotated[int, Field(ge=1, le=MAX_TEETH)]
    pitch_diameter: Length
    outside_diameter: Length
    pitch: Length

    @field_validator("outside_diameter")
    @classmethod
    def _tips_outside_pitch_circle(cls, value: float, info: ValidationInfo) -> float:
        pitch_diameter = info.data.get("pitch_diameter")
        if pitch_diameter is not None and value <= pitch_diameter:
            raise PydanticCustomError("tips_inside_pitch_circle", "must be greater than pitch_diameter")
        return value


class ChartData(_Strict):
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


def error_list(error: ValidationError, limit: int = 50) -> list[dict[str, Any]]:
    """pydantic's errors as `{"field", "message"}`, field a dotted path ("" for the whole body)."""
    return [
        {"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
        for item in error.errors(include_url=False)[:limit]
    ]
