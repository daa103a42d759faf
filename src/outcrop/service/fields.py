"""Typed reads from untrusted JSON bodies, with errors that name the offending field.

Every wire dialect reads client JSON through ``Obj`` so that a wrong type, a missing
required key or an out-of-range value always becomes a ``ValidationError`` whose message
says *where* the problem is, in the style the real service uses for that operation:

* ``native`` (InvokeModel bodies): ``Malformed input request: #/temperature: ...``
* ``converse`` (Converse / ConverseStream): ``Value at 'inferenceConfig.temperature' ...``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from outcrop.errors import ValidationError
from outcrop.service.types import SamplingParams

Style = Literal["native", "converse"]
Path = tuple[str | int, ...]


def json_type(value: Any) -> str:
    """The JSON-schema-ish type name Bedrock uses in its messages."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "JSONArray"
    if isinstance(value, dict):
        return "JSONObject"
    return type(value).__name__


def where(path: Path, style: Style) -> str:
    if style == "native":
        return "#" + "".join(f"/{p}" for p in path)
    return ".".join(str(p) for p in path) or "body"


def invalid(path: Path, problem: str, style: Style = "native") -> ValidationError:
    if style == "native":
        return ValidationError(
            f"Malformed input request: {where(path, style)}: {problem}, "
            "please reformat your input and try again."
        )
    return ValidationError(
        f"1 validation error detected: Value at '{where(path, style)}' "
        f"failed to satisfy constraint: {problem}"
    )


@dataclass(frozen=True)
class Obj:
    """A JSON object plus its location in the request, for precise error messages."""

    data: dict[str, Any]
    path: Path = ()
    style: Style = "native"

    @classmethod
    def of(cls, value: Any, path: Path = (), style: Style = "native") -> Obj:
        if not isinstance(value, dict):
            raise invalid(path, f"expected type: JSONObject, found: {json_type(value)}", style)
        return cls(value, path, style)

    def at(self, key: str | int) -> Path:
        return (*self.path, key)

    def fail(self, key: str | int | None, problem: str) -> ValidationError:
        return invalid(self.path if key is None else self.at(key), problem, self.style)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _get(self, key: str, required: bool) -> Any:
        # JSON null is treated as "absent", as the real service's schema validation does.
        value = self.data.get(key)
        if value is None and required:
            if self.style == "native":
                raise self.fail(None, f"required key [{key}] not found")
            raise self.fail(key, "Member must not be null")
        return value

    def value(self, key: str, *, required: bool = False) -> Any:
        """The raw value (for ``document`` members that may hold any JSON)."""
        return self._get(key, required)

    def _wrong(self, key: str, expected: str, value: Any) -> ValidationError:
        return self.fail(key, f"expected type: {expected}, found: {json_type(value)}")

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        non_empty: bool = False,
        choices: tuple[str, ...] | None = None,
    ) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._wrong(key, "String", value)
        if non_empty and not value.strip():
            raise self.fail(key, "expected a non-empty string")
        if choices is not None and value not in choices:
            raise self.fail(
                key, f"{value!r} is not a valid enum value; expected one of {list(choices)}"
            )
        return value

    def integer(
        self,
        key: str,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        # bool is an int subclass in Python but never a JSON integer; 5.0 is accepted as 5.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "Integer", value)
        self._check_range(key, value, minimum, maximum)
        return value

    def number(
        self,
        key: str,
        *,
        required: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(key, "Number", value)
        self._check_range(key, value, minimum, maximum)
        return float(value)

    def _check_range(
        self, key: str, value: float, minimum: float | None, maximum: float | None
    ) -> None:
        if minimum is not None and value < minimum:
            raise self.fail(key, f"{value} is not greater or equal to {minimum}")
        if maximum is not None and value > maximum:
            raise self.fail(key, f"{value} is not less or equal to {maximum}")

    def boolean(self, key: str) -> bool | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._wrong(key, "Boolean", value)
        return value

    def array(self, key: str, *, required: bool = False, non_empty: bool = False) -> list[Any]:
        value = self._get(key, required)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._wrong(key, "JSONArray", value)
        if non_empty and not value:
            raise self.fail(key, "expected minimum item count: 1, found: 0")
        return value

    def obj(self, key: str, *, required: bool = False) -> Obj | None:
        value = self._get(key, required)
        if value is None:
            return None
        return Obj.of(value, self.at(key), self.style)

    def objs(self, key: str, *, required: bool = False, non_empty: bool = False) -> list[Obj]:
        """An array whose every item must be an object."""
        items = self.array(key, required=required, non_empty=non_empty)
        return [Obj.of(item, (*self.at(key), i), self.style) for i, item in enumerate(items)]

    def strings(self, key: str, *, allow_single: bool = False) -> list[str]:
        """A list of non-empty strings (stop sequences). ``allow_single``: OpenAI's ``"stop": "x"``."""
        value = self._get(key, False)
        if value is None:
            return []
        if allow_single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self._wrong(key, "JSONArray", value)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise invalid(
                    (*self.at(key), i),
                    f"expected type: String, found: {json_type(item)}",
                    self.style,
                )
            if not item:
                raise invalid((*self.at(key), i), "expected a non-empty string", self.style)
        return list(value)


def read_sampling(
    o: Obj,
    *,
    max_tokens: str | None = None,
    max_tokens_required: bool = False,
    max_tokens_default: int | None = None,
    temperature: str | None = "temperature",
    temperature_max: float = 1.0,
    top_p: str | None = None,
    top_k: str | None = None,
    top_k_max: int | None = None,
    seed: str | None = None,
    stop: str | None = None,
    stop_single: bool = False,
) -> SamplingParams:
    """The decoding controls of one body, under that family's key names and limits.

    Families differ only in spelling and in the documented temperature ceiling, so the
    range rules (max tokens >= 1, top_p in 0..1, top_k >= 0) live here once.
    """
    params = SamplingParams()
    if max_tokens:
        params.max_tokens = o.integer(max_tokens, required=max_tokens_required, minimum=1)
        if params.max_tokens is None:
            params.max_tokens = max_tokens_default
    if temperature:
        params.temperature = o.number(temperature, minimum=0, maximum=temperature_max)
    if top_p:
        params.top_p = o.number(top_p, minimum=0, maximum=1)
    if top_k:
        params.top_k = o.integer(top_k, minimum=0, maximum=top_k_max)
    if seed:
        params.seed = o.integer(seed)
    if stop:
        params.stop = o.strings(stop, allow_single=stop_single)
    return params
