"""JSON Schemas from ``schemas/``: loaded and compiled once, then used to validate request bodies."""

import json
import math
from functools import lru_cache
from pathlib import Path

import jsonschema_rs
from flask import request
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from .errors import ApiError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@lru_cache(maxsize=None)
def _registry():
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((path.name, Resource.from_contents(contents)))
    return Registry().with_resources(resources)


def _inline(node, resolver, seen=()):
    """``node`` with every ``$ref`` replaced by what it points at (the schemas here are not recursive).

    jsonschema resolves a ``$ref`` each time it meets one, for every message of every request; resolved
    once at start, validation of a chat request takes a third of the time.
    """
    if isinstance(node, list):
        return [_inline(item, resolver, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        if node["$ref"] in seen:
            raise ValueError(f"recursive $ref {node['$ref']!r}")
        resolved = resolver.lookup(node["$ref"])
        target = _inline(resolved.contents, resolved.resolver, (*seen, node["$ref"]))
        rest = {k: _inline(v, resolver, seen) for k, v in node.items() if k != "$ref"}
        return {**target, **rest} if rest else target
    return {k: _inline(v, resolver, seen) for k, v in node.items() if k not in ("$defs", "$id", "$schema")}


@lru_cache(maxsize=None)
def validator(name):
    """The compiled validator for ``schemas/<name>.json``, its references resolved once."""
    schema = _registry().contents(f"{name}.json")
    Draft202012Validator.check_schema(schema)
    flat = _inline(schema, _registry().resolver(base_uri=f"{name}.json"))
    return Draft202012Validator(flat)


@lru_cache(maxsize=None)
def _accepts(name):
    """A yes/no check against the same schema, compiled by jsonschema-rs: a hundred times faster.

    Every chat request is checked; only a rejected one needs jsonschema's detailed errors.
    """
    return jsonschema_rs.validator_for(validator(name).schema).is_valid


def field_path(parts):
    """``messages[0].role`` from a jsonschema path deque."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error):
    """A message for one validation error that a person can act on."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        deepest = best_match(error.context)
        if deepest is not None and len(deepest.absolute_path) > len(error.absolute_path):
            return deepest
    return error


def validate(name, instance, status=400):
    """Raise an :class:`ApiError` (400, or ``status``) naming the offending field if ``instance`` breaks the schema."""
    try:
        if _accepts(name)(instance):
            return
    except (ValueError, TypeError, OverflowError):  # a value it cannot convert: jsonschema decides
        pass
    error = best_match(validator(name).iter_errors(instance))
    if error is None:
        return
    error = _describe(error)
    path = field_path(error.absolute_path)
    message = error.message
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next((name for name in error.validator_value if name not in error.instance), None)
        message = f"'{missing}' is required"
        path = field_path([*error.absolute_path, missing])
    elif error.validator == "dependentRequired" and isinstance(error.instance, dict):
        field, needed = next((k, v) for k, v in error.validator_value.items()
                             if k in error.instance and any(n not in error.instance for n in v))
        message = "only allowed together with " + " and ".join(repr(n) for n in needed)
        path = field_path([*error.absolute_path, field])
    elif error.validator in ("oneOf", "anyOf"):
        message = f"{error.instance!r} is not an accepted value"
        options = error.schema.get(error.validator, [])
        types = [s.get("type") for s in options if isinstance(s, dict) and "type" in s]
        if types:
            message += " (expected " + " or ".join(str(t) for t in types) + ")"
    elif error.validator == "const" and path.endswith(".type"):
        message = f"content part type {error.instance!r} is not supported; only 'text' parts are accepted"
    if len(message) > 300:
        message = message[:297] + "..."
    raise ApiError(status, f"{path}: {message}" if path else message, code="invalid_request", param=path or None)


def _number(text):
    """A JSON number written with a fraction or exponent: an ``int`` when its value is whole.

    JSON Schema counts ``2.0`` as an integer, so ``"max_tokens": 2.0`` passes the schema; parsed as an int,
    every value the schema calls an integer is a Python ``int`` after validation, and a backend is never
    handed ``2.0`` where it counts tokens (a slice, a ctypes seed).
    """
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text} is out of range")
    return int(value) if value.is_integer() else value


def _not_json(name):
    """``NaN``, ``Infinity`` and ``-Infinity`` are Python's, not JSON's; NaN would pass every range check."""
    raise ValueError(f"{name} is not a JSON value")


def json_body(status=400):
    """The request body parsed as JSON, or a 400 (or ``status``) that says why not."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise ApiError(status, "Request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw, parse_float=_number, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(status, f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    if (b"\\ud" in raw or b"\\uD" in raw) and not _unicode(body):  # only an escape can hold half a pair
        raise ApiError(status, "Request body has a string with a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
                       "escape); text must be valid Unicode", code="invalid_json")
    return body


def _unicode(value):
    """Whether every string in a parsed JSON value, keys included, is valid Unicode (no lone surrogate)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def validated_body(name, status=400):
    """The JSON body, checked against ``schemas/<name>.json``; errors answer ``status`` (default 400)."""
    body = json_body(status)
    validate(name, body, status)
    return body


def page_arguments(status=400):
    """``(limit, offset)`` from the query string, checked against ``schemas/page_query.json``."""
    arguments = {}
    for name in ("limit", "offset"):
        raw = request.args.get(name)
        if raw is None:
            continue
        try:
            arguments[name] = int(raw)
        except ValueError:
            raise ApiError(status, f"{name}: {raw!r} is not a whole number", code="invalid_request",
                           param=name) from None
    validate("page_query", arguments, status)
    return arguments.get("limit", 50), arguments.get("offset", 0)
