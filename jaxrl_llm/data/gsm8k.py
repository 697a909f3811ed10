"""Reader of GSM8K-format jsonl: one object per line with `question` and `answer`.

The `answer` field holds the worked solution and ends with `#### <number>`, the
final answer (commas allowed, as in `#### 1,200`).
"""

from __future__ import annotations

import re
from pathlib import Path

from jaxrl_llm.data.jsonl import DatasetFormatError, read_jsonl_records
from jaxrl_llm.data.problems import Problem

_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)\s*$")
SAMPLE_FILE = Path(__file__).with_name("samples") / "gsm8k_sample.jsonl"
_EXAMPLE = '{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\\n#### 7"}'


def parse_final_answer(solution: str) -> str | None:
    """The number after the last `####`, normalised (no commas); None if absent."""
    match = _FINAL.search(solution.strip())
    return None if match is None else match.group(1).replace(",", "")


def read_gsm8k_jsonl(path: str | Path) -> list[Problem]:
    """Reads every problem of a GSM8K-format jsonl file.

    Raises:
      DatasetFormatError: on invalid JSON, a missing/non-string field, or an answer
        without a final `#### <number>` line, naming the file and the line number.
    """
    problems = []
    for where, record in read_jsonl_records(path, {"question": "string", "answer": "string"}, _EXAMPLE, "problems"):
        final = parse_final_answer(record["answer"])
        if final is None:
            raise DatasetFormatError(
                f"{where}: 'answer' must end with '#### <number>' (GSM8K format); got "
                f"{record['answer'][-40:]!r}."
            )
        problems.append(Problem(record["question"], final))
    return problems
