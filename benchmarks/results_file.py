"""benchmarks/RESULTS.md: each benchmark appends its dated blocks to the end of its own section."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def append_to_section(header: str, block: str, results: Path = RESULTS) -> None:
    """Appends `block` at the end of the `## ...` section `header` (created at the end of the
    file if absent), before the next section, and says where."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    if header not in text.splitlines():
        text = text.rstrip("\n") + f"\n\n{header}\n"
    start = text.index(header + "\n") + len(header)
    next_section = text.find("\n## ", start)
    end = len(text) if next_section == -1 else next_section
    text = text[:end].rstrip("\n") + "\n" + block.rstrip("\n") + "\n" + text[end:]
    results.write_text(text)
    print(f"appended to {results} ({header})")
