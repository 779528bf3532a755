"""How long the dag-processor takes to parse ``dags/pacbook_warehouse.py``, against a one-task DAG.

Each parse runs in a fresh interpreter that has already imported ``airflow`` and ``cosmos`` (the
dag-processor has them loaded), against unreachable databases (parsing must not touch them). The
baseline is a DAG of one ``EmptyOperator`` parsed the same way in the same run, so the ratio says
what our DAG (Cosmos rendering ~40 dbt nodes from the manifest) costs above Airflow's own floor.

    PYTHONPATH=. .venv/bin/python -m bench.dag_parse --repeat 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from include.pacbook import config

BASELINE_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import dag

    @dag(schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
    def baseline():
        EmptyOperator(task_id="only")

    baseline()
    """
)


def parse_seconds(dag_file: Path, home: Path) -> float:
    script = (
        "import airflow, cosmos, runpy, time\n"
        "started = time.perf_counter()\n"
        f"runpy.run_path({str(dag_file)!r})\n"
        "print(time.perf_counter() - started)\n"
    )
    unreachable = "postgresql://nobody:x@127.0.0.1:9/none"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": unreachable.replace("postgresql", "postgresql+psycopg2", 1),
        "AIRFLOW_CONN_PACBOOK_SOURCE": unreachable,
        "AIRFLOW_CONN_PACBOOK_WAREHOUSE": unreachable,
        "PYTHONPATH": str(config.PROJECT_ROOT),
    }
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    ours_file = config.PROJECT_ROOT / "dags" / "pacbook_warehouse.py"
    with tempfile.TemporaryDirectory(prefix="pacbook-bench-parse-") as folder:
        home = Path(folder)
        baseline_file = home / "baseline_dag.py"
        baseline_file.write_text(BASELINE_DAG)
        parse_seconds(ours_file, home)  # warm the OS file cache for both
        parse_seconds(baseline_file, home)
        ours, baseline = [], []
        for _ in range(args.repeat):  # interleaved, so machine load hits both alike
            ours.append(parse_seconds(ours_file, home))
            baseline.append(parse_seconds(baseline_file, home))
    ours_median, baseline_median = statistics.median(ours), statistics.median(baseline)
    print(f"DAG parse, median of {args.repeat} (fresh interpreter, airflow + cosmos already imported):")
    print(f"  pacbook_warehouse  {ours_median * 1000:8.0f} ms")
    print(f"  one-task baseline  {baseline_median * 1000:8.0f} ms")
    print(f"  ratio              {ours_median / baseline_median:8.1f} x   (target: pacbook under 2 s)")


if __name__ == "__main__":
    main()
