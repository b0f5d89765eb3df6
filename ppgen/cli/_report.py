"""The report a fit command prints and writes as ``report.md``, and its shared pieces."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Report", "fmt", "fmt_total", "settings_line", "convergence_text", "posterior_summary",
           "json_text"]


def fmt(v: float, digits: int = 6) -> str:
    return f"{v:.{digits}g}"


def fmt_total(v: float, dtype: Any, decimals: int = 3) -> str:
    """A total (a log-likelihood, an objective) with at most ``decimals`` decimals, and no
    more digits than the dtype it was computed in holds (float32: about 7 significant
    digits, so -1234567.891 prints as -1234568)."""
    import math

    name = str(dtype).rsplit(".", 1)[-1].split("'")[0]  # torch.float32, numpy's float32
    digits = {"float16": 3, "bfloat16": 2, "float32": 7}.get(name, 15)
    if not math.isfinite(v) or v == 0:
        return f"{v:.{decimals}f}"
    keep = digits - 1 - math.floor(math.log10(abs(v)))
    return f"{v:.{max(0, min(decimals, keep))}f}"


def _text_table(header: list[str], rows: list[list[str]], indent: str = "  ",
                numeric: bool = True) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned (numbers) or
    left-aligned (``numeric=False``)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return indent + "  ".join(c.rjust(w) if i and numeric else c.ljust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header)] + [line(row) for row in rows])


def _md_table(header: list[str], rows: list[list[str]], numeric: bool = True) -> str:
    align = "---:" if numeric else ":---"
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + [align] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Report:
    """The report of a run, twice: plain text for stdout and markdown for ``report.md``."""

    text: list[str] = field(default_factory=list)
    markdown: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.text += ["", title]
        self.markdown += ["", f"## {title}", ""]

    def both(self, text: str, markdown: str | None = None) -> None:
        self.text.append(f"  {text}" if text else text)
        self.markdown.append(text if markdown is None else markdown)

    def bullets(self, lines: list[str]) -> None:
        """Indented lines in the text report, a bulleted list in report.md."""
        self.text += [f"  {line}" for line in lines]
        self.markdown += [f"- {line}" for line in lines]

    def diagnostics(self, diagnostics: list[Any]) -> None:
        """The Diagnostics section: one line per finding of ``fit.diagnose()``."""
        self.section("Diagnostics")
        if not diagnostics:
            self.both("none: no warnings", "None: no warnings.")
        for d in diagnostics:
            self.text.append(f"  {d}")
            self.markdown.append(f"- **{d.code}**: {d.message}")

    def table(self, header: list[str], rows: list[list[str]], numeric: bool = True) -> None:
        self.text.append(_text_table(header, rows, numeric=numeric))
        self.markdown.append(_md_table(header, rows, numeric=numeric))


def settings_line(fit: Any, device: str | None, extra: str, options: dict[str, Any]) -> str:
    """The report's line of run settings: seed, device, model settings, fit options, time."""
    run_settings = ", ".join(f"{key}={val}" for key, val in options.items())
    return (f"seed {fit.seed}, device {device}{extra}"
            + (f", {run_settings}" if run_settings else "")
            + f", fitted in {fit.elapsed:.2f} s")


def convergence_text(fit: Any) -> str:
    """The value of the ``convergence`` row of a report's Fit table."""
    steps = len(fit.history.get("objective", []))
    state = {True: "converged", False: "NOT converged", None: "ran all"}.get(fit.converged)
    if fit.method == "em":
        return f"{state} after {max(steps - 1, 0)} EM iterations"
    if fit.method == "svi":
        return f"{state} after {steps} SVI steps"
    return "n/a for MCMC: see R-hat, ESS and divergences under Diagnostics"


def posterior_summary(report: Report, fit: Any) -> None:
    """The section ``Posterior summary (ArviZ)`` of an MCMC fit."""
    import pandas as pd

    table = fit.summary()
    cols = [c for c in ("mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "ess_tail", "r_hat")
            if c in table.columns]
    table = table[cols]
    # corr_chol holds fixed entries (1 on the diagonal, 0 above): leave them out.
    if "sd" in table.columns:
        table = table[~((table["sd"] == 0) & table.index.str.startswith("corr_chol"))]
    report.section("Posterior summary (ArviZ)")
    rows = [[str(idx)] + [("nan" if pd.isna(v) else fmt(float(v), 4)) for v in row]
            for idx, row in zip(table.index, table.itertuples(index=False))]
    report.table(["parameter"] + cols, rows)


def json_text(obj: Any, indent: int = 0) -> str:
    """JSON indented by 2 like ``json.dumps(obj, indent=2)``, but with each list of plain
    values (document indices, a topic's words) on one line."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {json_text(v, indent + 2)}"
                 for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list | tuple) and any(isinstance(v, dict | list | tuple) for v in obj):
        items = [f"{inner}{json_text(v, indent + 2)}" for v in obj]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(obj)
