"""The Airflow UI in a real browser: what an operator sees after a run triggered with parameters.

The run is triggered through the REST API (with ``full_refresh``) on the package's real Airflow stack;
then headless Chromium logs in through the simple auth manager's own login form, opens the run's grid
and reads the rendered page: the run's state, the Cosmos task groups and, expanded, every dbt task of
each layer with its state colour and tooltip. Screenshots and page sources land in ``test-output/``;
the grid screenshot is also copied to ``docs/img/airflow_grid.png`` for the README when that file is
missing (delete it to take a new one), so a test run leaves the tracked picture alone.
"""

from __future__ import annotations

import shutil
import urllib.parse
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from include.pacbook import config
from include.pacbook.airflow_stack import ADMIN_USER, AirflowStack
from include.pacbook.headless_browser import save_evidence, wait_for, webdriver_session
from tests.conftest import query_one
from tests.e2e.conftest import NIGHTLY_PARAMS

pytestmark = pytest.mark.e2e

DBT_GROUPS = ("staging", "dwh", "marts")
# One task per layer that must be there whatever else the dbt project grows: the grid lists tasks by
# the API's ids, so without these a project that lost its models would still "match" itself.
SPOT_CHECKS = (
    "staging.stg_pacbook__cust_order_model_build",
    "dwh.fct_sales_model_build",
    "marts.monthly_sales_model_build",
)
README_IMAGE = config.PROJECT_ROOT / "docs" / "img" / "airflow_grid.png"
ROW_PX = 20  # the grid draws one 20 px row per task and virtualises the rows below the window


def rgb(driver, css_color: str) -> tuple[int, int, int]:
    """Any CSS colour the browser computed (the UI uses ``oklch(...)``) as sRGB, converted by the browser."""
    return tuple(
        driver.execute_script(
            "const c = document.createElement('canvas').getContext('2d');"
            "c.fillStyle = arguments[0]; c.fillRect(0, 0, 1, 1);"
            "return Array.from(c.getImageData(0, 0, 1, 1).data.slice(0, 3));",
            css_color,
        )
    )


def is_green(color: tuple[int, int, int]) -> bool:
    red, green, blue = color
    return green >= red + 40 and green >= blue + 40


def assert_green(driver, badge, what: str, evidence: Path) -> None:
    """The state badge is drawn in the UI's success green (checked on the colour the browser computed)."""
    css = badge.value_of_css_property("background-color")
    color = rgb(driver, css)
    if not is_green(color):
        png, html = save_evidence(driver, evidence, f"not_green_{what}")
        raise AssertionError(f"{what} is not green: {css} = rgb{color}\nscreenshot: {png}\npage source: {html}")


def log_in(driver, stack: AirflowStack, start_path: str, evidence: Path) -> None:
    """Opens a UI page, is sent to the login form, proves a wrong password is refused, then logs in."""
    driver.get(stack.base_url + start_path)
    form = wait_for(
        driver,
        lambda d: "/auth/login" in d.current_url and d.find_elements(By.NAME, "password"),
        "the simple auth manager's login form (an unauthenticated visit must be sent there)",
        evidence,
    )
    assert form, driver.current_url

    def submit(password: str) -> None:
        for name, value in (("username", ADMIN_USER), ("password", password)):
            field = driver.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        driver.find_element(By.XPATH, "//button[@type='submit'][normalize-space()='Sign in']").click()

    submit("not-" + stack.admin_password)
    wait_for(driver, lambda d: "Invalid credentials" in d.page_source, "the refusal of a wrong password", evidence)
    assert "/auth/login" in driver.current_url and driver.get_cookie("_token") is None

    submit(stack.admin_password)
    wait_for(
        driver,
        lambda d: "/auth/login" not in d.current_url and d.get_cookie("_token"),
        "the UI after logging in as admin",
        evidence,
        timeout=60,
    )
    assert urllib.parse.unquote(urllib.parse.urlsplit(driver.current_url).path) == urllib.parse.unquote(start_path)


def grid_row(driver, task_id: str):
    found = driver.find_elements(By.CSS_SELECTOR, f"[data-testid='task-{task_id.replace('.', '-')}']")
    return found[0] if found and found[0].is_displayed() else None


def grid_cell_badge(driver, run_id: str, task_id: str):
    found = driver.find_elements(
        By.CSS_SELECTOR, f"a[data-testid='grid-{run_id}-{task_id}'] [data-testid='task-state-badge']"
    )
    return found[0] if found and found[0].is_displayed() else None


def test_ui_shows_the_green_run_with_every_cosmos_group_and_dbt_task(airflow, nightly_run, output_dir):
    run, warehouse = nightly_run
    states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances(config.DAG_ID, run["dag_run_id"])}
    assert run["state"] == "success", {task: state for task, state in states.items() if state != "success"}
    assert run["conf"] == NIGHTLY_PARAMS
    assert query_one(warehouse, "select count(*) from marts.monthly_sales")[0] > 0

    grid_png = assert_ui_shows_run(airflow, run["dag_run_id"], states, output_dir)

    if not README_IMAGE.exists():  # the README's picture; delete it to take a new one
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(grid_png, README_IMAGE)


def assert_ui_shows_run(stack: AirflowStack, run_id: str, states: dict[str, str], evidence: Path) -> Path:
    """Logs in, opens the run's grid and checks what it shows against the run; returns the grid screenshot."""
    dbt_tasks = sorted(task for task in states if "." in task and task.split(".", 1)[0] in DBT_GROUPS)
    assert set(SPOT_CHECKS) <= set(dbt_tasks), dbt_tasks
    assert {task.split(".", 1)[0] for task in dbt_tasks} == set(DBT_GROUPS)
    assert all(states[task] == "success" for task in dbt_tasks), {t: states[t] for t in dbt_tasks}

    run_path = f"/dags/{config.DAG_ID}/runs/{urllib.parse.quote(run_id, safe='')}"
    # Tall enough that the virtualised grid draws every row once the groups are expanded.
    height = 600 + ROW_PX * (len(states) + len(DBT_GROUPS))
    with webdriver_session(width=1600, height=height) as driver:
        log_in(driver, stack, run_path, evidence)

        # The run's header: its id and a green "Success" badge.
        header_badge = wait_for(
            driver,
            lambda d: [
                badge
                for card in d.find_elements(By.CSS_SELECTOR, "[data-testid='header-card']")
                if run_id in card.text
                for badge in card.find_elements(By.CSS_SELECTOR, "[data-testid='state-badge']")
                if badge.text.strip() == "Success"
            ],
            f"the header of run {run_id} with the state Success",
            evidence,
        )[0]
        assert_green(driver, header_badge, f"the state badge of run {run_id}", evidence)

        # The Cosmos task groups, collapsed: the group rows are there, their dbt tasks are not (yet).
        for group in DBT_GROUPS:
            wait_for(driver, lambda d, g=group: grid_row(d, g), f"the task group {group!r} in the grid", evidence)
            badge = wait_for(
                driver, lambda d, g=group: grid_cell_badge(d, run_id, g), f"the grid cell of {group!r}", evidence
            )
            assert_green(driver, badge, f"the grid cell of group {group!r}", evidence)
        assert not [task for task in dbt_tasks if grid_row(driver, task)], "dbt tasks shown before expanding"

        # Expanded one by one through their own toggles: every dbt task of the run, named, in green.
        for group in DBT_GROUPS:
            driver.find_element(By.CSS_SELECTOR, f"[aria-label='Toggle group'][data-group-id='{group}']").click()
            members = [task for task in dbt_tasks if task.startswith(f"{group}.")]
            wait_for(
                driver,
                lambda d, m=members: all(grid_row(d, task) for task in m),
                lambda d, g=group, m=members: (
                    f"the dbt tasks of {g!r} after expanding it; missing: {[t for t in m if not grid_row(d, t)]}"
                ),
                evidence,
            )
            for task in members:
                assert grid_row(driver, task).text.strip() == task.split(".", 1)[1]
                badge = wait_for(
                    driver, lambda d, t=task: grid_cell_badge(d, run_id, t), f"the grid cell of {task}", evidence
                )
                assert_green(driver, badge, f"the grid cell of {task}", evidence)

        grid_png, _ = save_evidence(driver, evidence, "airflow_grid")

        # The tooltip of a cell states it in words: this task, this run, Success.
        for task in SPOT_CHECKS:
            ActionChains(driver).move_to_element(grid_cell_badge(driver, run_id, task)).perform()
            wait_for(
                driver,
                lambda d, t=task: any(
                    f"Task ID: {t}" in tip.text and f"Run ID: {run_id}" in tip.text and "State: Success" in tip.text
                    for tip in d.find_elements(By.CSS_SELECTOR, "[data-scope='tooltip'][data-part='content']")
                ),
                f"the tooltip of {task} saying State: Success",
                evidence,
                timeout=20,
            )
    return grid_png
