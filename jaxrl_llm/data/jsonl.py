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


def read_jsonl_records(
    path: str | Path, fields: dict[str, str], example: str, what: str = "records"
) -> list[tuple[str, dict]]:
    """`(where, record)` of every non-blank line of a JSON Lines file, `where` = "path:line".

    `fields` maps each required field to 'string' or 'number' (finite); `example` is a valid
    line quoted in the errors; `what` names the records in the empty-file error.

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
            value = record[name]
            if kind == "string" and not isinstance(value, str):
                raise DatasetFormatError(
                    f"{where}: field {name!r} must be a string, got {type(value).__name__} {value!r:.60}; "
                    "put the text in double quotes."
                )
            if kind == "number" and not (_is_number(value) and math.isfinite(value)):
                raise DatasetFormatError(
                    f"{where}: field {name!r} must be a finite number, got {type(value).__name__} "
                    f"{value!r:.60}; write it as a JSON number without quotes, e.g. 1.0."
                )
        records.append((where, record))
    if not records:
        raise DatasetFormatError(f"{path}: no {what} found (empty file?); write one JSON object per line, e.g. {example}")
    return records
