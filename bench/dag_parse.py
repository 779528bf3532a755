"""How long the dag-processor takes to parse ``dags/pacbook_warehouse.py``, against a one-task DAG.

Each parse runs in a fresh interpreter, against unreachable databases (parsing must not touch them),
in two set-ups, each timed from the first line of the DAG file to its last:

* **fresh interpreter**: ``airflow`` and ``cosmos`` already imported, nothing else;
* **as the dag-processor forks it**: Airflow 3's dag-processor parses each file in a child forked
  from its manager process, which has imported ``airflow.dag_processing.manager`` (with it the ORM
  models, and Cosmos through its policy entry point) and called ``gc.freeze()`` before the parsing
  loop (``DagFileProcessorManager.before_run``): the child neither imports those again nor has its
  garbage collector walk their objects. The same imports and the same ``gc.freeze()`` precede the
  timed window here.

The baseline is a DAG of one ``EmptyOperator`` parsed the same way in the same run, so the ratio says
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


SETUPS = {
    "fresh interpreter": "import airflow, cosmos\n",
    "as the dag-processor forks it": "import airflow, cosmos, airflow.dag_processing.manager, gc\ngc.freeze()\n",
}
TARGET_SECONDS = 0.5  # issue 9


def parse_seconds(dag_file: Path, home: Path, setup: str) -> float:
    script = (
        SETUPS[setup] + "import runpy, time\n"
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
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pacbook-bench-parse-") as folder:
        home = Path(folder)
        baseline_file = home / "baseline_dag.py"
        baseline_file.write_text(BASELINE_DAG)
        runs = {(setup, name): [] for setup in SETUPS for name in ("ours", "baseline")}
        for setup in SETUPS:  # warm the OS file cache for both
            parse_seconds(ours_file, home, setup)
            parse_seconds(baseline_file, home, setup)
        for _ in range(args.repeat):  # interleaved, so machine load hits all alike
            for setup in SETUPS:
                runs[setup, "ours"].append(parse_seconds(ours_file, home, setup))
                runs[setup, "baseline"].append(parse_seconds(baseline_file, home, setup))
    load_after = os.getloadavg()
    print(f"DAG parse of pacbook_warehouse, median of {args.repeat} (target <= {TARGET_SECONDS * 1000:.0f} ms):")
    print(f"  {'set-up':<31} {'ours':>8} {'one-task':>9} {'ratio':>7}  holds?  (ours, each run)")
    for setup in SETUPS:
        ours, baseline = statistics.median(runs[setup, "ours"]), statistics.median(runs[setup, "baseline"])
        each = ", ".join(f"{s * 1000:.0f}" for s in runs[setup, "ours"])
        holds = "yes" if ours <= TARGET_SECONDS else "NO"
        ratio = ours / baseline
        print(f"  {setup:<31} {ours * 1000:5.0f} ms {baseline * 1000:6.0f} ms {ratio:6.1f}x  {holds:<6}  ({each})")
    print(f"  load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
