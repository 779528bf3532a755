"""One table of every benchmark figure (issue 9): figure, ours, baseline, ratio, target, holds?

Reads the results the benchmarks write under ``<state_dir>/bench/`` (the latest of each kind and
scale) and ``make-run.json``, which ``make run`` writes at its end; ``make bench`` prints it last.
Nothing is measured here: a figure whose benchmark has not run yet is listed as missing, with the
command that measures it.

    PYTHONPATH=. .venv/bin/python -m bench.summary
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.extraction import render_table
from include.pacbook import config

MEASURED_BY = {
    "extraction": "python -m bench.extraction --scale 10 --repeat 3 --memory-scales 10,100",
    "increment": "python -m bench.increment --scale 10 --repeat 3",
    "transform": "python -m bench.transform --scale 1 --repeat 3",
    "scale": "python -m bench.scale --scale 100 --repeat 3",
    "make-run": "make run",
}


def _rows_of(kind: str, result: dict) -> list[dict]:
    scale = result.get("scale")
    where = f" (scale {scale:g})" if isinstance(scale, int | float) else ""
    if kind == "increment":
        return [
            {
                "figure": f"nightly increment vs full rebuild: {f['figure']}{where}",
                "ours": f"{f['increment_s']:.2f} s",
                "baseline": f"{f['full_s']:.2f} s",
                "ratio": f"{f['ratio']:.2f}",
                "target": f["target"],
                "holds": f["holds"],
            }
            for f in result["figures"]
        ]
    if kind == "scale":
        build = result["dbt_build"]["seconds"]
        slowest = max(result["queries"], key=lambda q: q["median_ms"])
        return [
            {
                "figure": f"full dbt build{where}",
                "ours": f"{build:.0f} s",
                "baseline": "-",
                "ratio": "-",
                "target": "<= 600 s",
                "holds": build <= 600,
            },
            {
                "figure": f"slowest of {len(result['queries'])} BI queries on the marts{where}",
                "ours": f"{slowest['median_ms']:.1f} ms ({slowest['name']})",
                "baseline": "-",
                "ratio": "-",
                "target": "< 1000 ms",
                "holds": all(q["holds"] for q in result["queries"]),
            },
        ]
    if kind == "make-run":
        return [
            {
                "figure": f"make run, warm venv{where} ({result['state']})",
                "ours": f"{result['seconds_total']:.0f} s (DAG run {result['seconds_dag_run']:.0f} s)",
                "baseline": "-",
                "ratio": "-",
                "target": "reported",
                "holds": result["state"] == "success",
            }
        ]
    return [
        {
            "figure": f"{f['figure']}{where}",
            "ours": str(f["ours"]) if "ours" in f else _seconds(f.get("ours_s")),
            "baseline": str(f["baseline"]) if "baseline" in f else _seconds(f.get("baseline_s")),
            "ratio": f"{f['ratio']:.2f}" if isinstance(f.get("ratio"), int | float) else str(f.get("ratio", "-")),
            "target": str(f.get("target", "-")),
            "holds": bool(f.get("holds")),
        }
        for f in result.get("figures", [])
    ]


def _seconds(value) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "-"


def collect(bench_dir: Path) -> tuple[list[dict], list[str]]:
    rows: list[dict] = []
    missing: list[str] = []
    for kind, command in MEASURED_BY.items():
        files = sorted(bench_dir.glob(f"{kind}.json" if kind == "make-run" else f"{kind}-*.json"))
        files = [f for f in files if not f.name.endswith("-queries.json")]
        if not files:
            missing.append(f"{kind}: not measured yet ({command})")
        for path in files:
            result = json.loads(path.read_text())
            measured = result.get("started_at") or result.get("finished_at") or "?"
            for row in _rows_of(kind, result):
                rows.append(row | {"figure": f"{row['figure']} [{measured[:16]}]"})
    return rows, missing


def main() -> int:
    bench_dir = config.state_dir() / "bench"
    rows, missing = collect(bench_dir)
    print(f"\nEvery figure, from the results in {bench_dir} (time of measurement in brackets)")
    print(render_table(rows))
    for line in missing:
        print(f"  missing: {line}")
    print("  DAG parse time: printed by `python -m bench.dag_parse` above (no results file)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
