"""Figures printed side by side: ours, the baseline run in the same benchmark, and their ratio."""

from dataclasses import dataclass, field


@dataclass
class Row:
    label: str
    ours: float | None
    baseline: float | None
    unit: str = ""
    # "lower" or "higher" is better; None prints no ratio (a count, say).
    better: str | None = "lower"


@dataclass
class Table:
    title: str
    ours_name: str
    baseline_name: str
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def add(self, label, ours, baseline, unit="", better="lower"):
        self.rows.append(Row(label, ours, baseline, unit, better))

    def note(self, text):
        self.notes.append(text)

    def render(self):
        width = max([len(row.label) + len(row.unit) + 3 for row in self.rows] + [30])
        lines = [self.title,
                 f"  {'':<{width}} {self.ours_name:>14} {self.baseline_name:>18}  ours/baseline"]
        for row in self.rows:
            label = f"{row.label} ({row.unit})" if row.unit else row.label
            lines.append(f"  {label:<{width}} {fmt(row.ours):>14} {fmt(row.baseline):>18}  "
                         f"{ratio(row)}")
        lines += [f"  * {note}" for note in self.notes]
        return "\n".join(lines)


def fmt(value):
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(row):
    if row.better is None or not row.ours or not row.baseline:
        return ""
    value = row.ours / row.baseline
    verdict = "better" if (value < 1) == (row.better == "lower") else "worse"
    if value == 1:
        verdict = "same"
    return f"{value:.3g}x ({row.better} is better: {verdict})"
