"""Validation problems: one line each, naming the file, the key path and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    source: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.message}"


# Lines a report prints at most: a broken file (or a hostile one) still gets a readable answer.
MAX_PROBLEMS_SHOWN = 50


class ConfigError(Exception):
    """A config that must not be applied; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        shown = [str(p) for p in self.problems[:MAX_PROBLEMS_SHOWN]]
        hidden = len(self.problems) - len(shown)
        if hidden > 0:
            shown.append(f"... and {hidden} more problem(s) in {self.problems[0].source}")
        return shown
