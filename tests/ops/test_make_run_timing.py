"""`make run` keeps its own wall time for `make bench`'s table (issue 9, figure 6)."""

from __future__ import annotations

import json

from include.pacbook.local_run import record_timing


def test_make_run_records_its_wall_time_and_the_dag_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PACBOOK_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PACBOOK_SOURCE_SCALE", "1")
    record_timing({"state": "success", "dag_run_id": "scheduled__x"}, total_seconds=612.34, dag_run_seconds=546.04)
    timing = json.loads((tmp_path / "bench" / "make-run.json").read_text())
    assert (timing["state"], timing["scale"], timing["seconds_total"], timing["seconds_dag_run"]) == (
        "success",
        1.0,
        612.3,
        546.0,
    )
    assert len(timing["load_average"]) == 3
