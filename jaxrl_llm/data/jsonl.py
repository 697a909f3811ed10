"""JSON Lines files of records with required fields, read with errors that name the file,
the line and the fix (the GSM8K reader and the offline-dataset readers share it)."""

from __future__ import annotations

import json
import math
from pathlib import Path


class DatasetFormatError(ValueError):
    """A data file does not follow its format; the message names the file and line."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    return _is_number(value) and math.isfinite(value)


_KIND_CHECKS = {
    "string": (lambda value: isinstance(value, str), "a string", "put the text in double quotes"),
    "number": (_is_finite_number, "a finite number", "write it as a JSON number without quotes, e.g. 1.0"),
}


def _check_field(where: str, name: str, kind: str, value) -> None:
    base, _, listed = kind.partition(" or ")
    is_valid, description, fix = _KIND_CHECKS[base]
    if listed and isinstance(value, list):
        if value and all(is_valid(item) for item in value):
            return
        raise DatasetFormatError(
            f"{where}: field {name!r} must be {description} or a non-empty list of them, got "
            f"{value!r:.60}; {fix}."
        )
    if not is_valid(value):
        either = " (or a list of them)" if listed else ""
        raise DatasetFormatError(
            f"{where}: field {name!r} must be {description}{either}, got {type(value).__name__} "
            f"{value!r:.60}; {fix}."
        )


def read_jsonl_records(
    path: str | Path, fields: dict[str, str], example: str, what: str = "records"
) -> list[tuple[str, dict]]:
    """`(where, record)` of every non-blank line of a JSON Lines file, `where` = "path:line".

    `fields` maps each required field to its kind: 'string', 'number' (finite), or
    'string or list' / 'number or list' (also a non-empty JSON list of them); `example` is a
    valid line quoted in the errors; `what` names the records in the empty-file error.

    Raises:
      DatasetFormatError: a missing file, invalid JSON, a non-object line, a missing or
        mistyped field, or no records, naming the file and line and how to fix it.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found.")
    wanted = ", ".join(repr(name) for name in fields)
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetFormatError(
                f"{where}: not valid JSON ({error.msg} at column {error.colno}); each line must hold one "
                f"JSON object, e.g. {example}"
            ) from None
        if not isinstance(record, dict):
            raise DatasetFormatError(
                f"{where}: expected a JSON object with fields {wanted}, got a JSON {type(record).__name__}; "
                f"e.g. {example}"
            )
        for name, kind in fields.items():
            if name not in record:
                raise DatasetFormatError(f"{where}: field {name!r} is missing; each line needs {wanted}, e.g. {example}")
            _check_field(where, name, kind, record[name])
        records.append((where, record))
    if not records:
        raise DatasetFormatError(f"{path}: no {what} found (empty file?); write one JSON object per line, e.g. {example}")
    return records
