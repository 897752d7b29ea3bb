"""Types shared by the API's models: text that every store can keep, pages, examples."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from gateway.model.identifiers import MAX_LENGTH, MAX_TAG_VALUE, PATTERN, RULE, identifier_problem, tag_value_problem

T = TypeVar("T")


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and a lone surrogate (valid in JSON's \u escapes)
    # cannot be encoded at all: refuse both here rather than fail in the store.
    if "\x00" in value:
        msg = "must not contain the NUL character"
        raise ValueError(msg)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        msg = "must be valid Unicode text (no lone surrogates)"
        raise ValueError(msg) from None
    return value


#: Free text a store can keep.
Text = Annotated[str, AfterValidator(_storable)]
def _identifier(value: str) -> str:
    problem = identifier_problem(value)
    if problem is not None:
        # A custom error, not ValueError: pydantic would put "Value error, " before the message.
        raise PydanticCustomError("identifier", "{problem}; an identifier is {rule}", {"problem": problem, "rule": RULE})
    return value


def _tag_value(value: str) -> str:
    problem = tag_value_problem(value)
    if problem is not None:
        raise PydanticCustomError("tag_value", "the tag value {problem}", {"problem": problem})
    return value


#: A meter number, consumer number, device number or tag key: the rule of gateway/model/identifiers.py,
#: checked by one function (a message that says what is wrong) and published as a pattern in the schema.
Identifier = Annotated[str, AfterValidator(_identifier),
                       WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_LENGTH, "pattern": PATTERN})]
#: A tag's value: short printable text.
TagValue = Annotated[str, AfterValidator(_tag_value), WithJsonSchema({"type": "string", "maxLength": MAX_TAG_VALUE})]


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `cursor` for the next one."""

    items: list[T]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` to get the next page; null at the end",
                                    examples=["WyJNLTAwMTAiXQ"])


class ErrorOut(BaseModel):
    """Every error: a stable name, a message that says what is wrong, and where when known."""

    error: str = Field(examples=["invalid_request"])
    message: str = Field(examples=["from (2026-03-02T00:00:00+00:00) must be before to (2026-03-01T00:00:00+00:00)"])
    where: str | None = Field(default=None, examples=["query.from"])
    problems: list[str] | None = Field(default=None, description="Each invalid field of a request",
                                       examples=[["query.limit: Input should be less than or equal to 10000"]])


#: Error responses every /v1 route can give, for the OpenAPI document.
ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorOut, "description": "The request asks for something impossible; the message says what"},
    401: {"model": ErrorOut, "description": "No valid API key (send Authorization: Bearer <key>)"},
    403: {"model": ErrorOut, "description": "The key lacks the scope this route needs"},
    404: {"model": ErrorOut, "description": "Not found"},
    413: {"model": ErrorOut, "description": "The request body is larger than the route's limit (the message says it)"},
    422: {"model": ErrorOut, "description": "Invalid parameters or body; `problems` lists each"},
    503: {"model": ErrorOut, "description": "The store cannot be reached now; try again"},
}


def error(description: str) -> dict[str, object]:
    """An error response of one route, for `responses=` (the body is an ErrorOut)."""
    return {"model": ErrorOut, "description": description}
