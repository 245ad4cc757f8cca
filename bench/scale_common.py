"""What every part of bench/scale.py returns: one figure beside its goal."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure. `at_most` is True when lower is better (a time, a ratio), False when higher is
    (a rate); a `goal` of None marks a figure shown for reference, which has no goal to meet. `built` says how
    the data measured was made: "daemon" (through hotshot's own paths) or "sqlite" (written directly, where only
    the size matters)."""

    name: str
    value: float
    goal: float | None
    unit: str
    at_most: bool = True
    built: str = "daemon"

    @property
    def met(self) -> bool:
        if self.goal is None:
            return True
        return self.value <= self.goal if self.at_most else self.value >= self.goal

    def line(self) -> str:
        if self.goal is None:
            goal, met = f"{'(reference)':>15}", " - "
        else:
            sign = "<=" if self.at_most else ">="
            goal, met = f"{sign}{self.goal:>9.3g} {self.unit:<3}", "yes" if self.met else "NO "
        return f"{self.name:<58} {self.value:>10.3g} {self.unit:<3} {goal} {met}  {self.built}"
