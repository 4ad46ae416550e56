"""The MLflow UI, as a user opens it: a real `mlflow server` on 127.0.0.1 and headless Chromium show the
sweep's parent run, its child runs and their metrics. Needs Debian's chromium and chromium-driver
(.ci/run installs them); skipped, with the reason, where they are missing."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import mlflow
import pytest

from conftest import FAST, deepsweep_cli
from conftest import mlflow_server as start_mlflow_server

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)"),
]


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless as root on a closed network: no sandbox, and none of Chromium's background connections.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def mlflow_server(isolated_tracking):
    with start_mlflow_server(isolated_tracking, isolated_tracking.parent) as url:
        yield url


def _page_text(driver, url: str, expected: list[str], timeout: float = 60) -> str:
    """Open ``url`` and wait until the rendered page (a React app) shows every expected string."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    while True:
        text = driver.find_element("tag name", "body").text
        if all(e in text for e in expected) or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def test_sweep_parent_children_and_metrics_show_in_the_mlflow_ui(tmp_path, isolated_tracking, mlflow_server, browser):
    sweep_dir = tmp_path / "sweep"
    # Hydra's basic launcher: the jobs in this process (the parallel launcher's workers are tested elsewhere,
    # and here would start two interpreters while the server starts).
    result = deepsweep_cli("run", "-m", "hydra/launcher=basic", "init=xavier_uniform,he_normal", *FAST,
                           f"hydra.sweep.dir={sweep_dir}",
                           env={"MLFLOW_TRACKING_URI": f"sqlite:///{isolated_tracking}"})
    assert result.returncode == 0, result.stderr[-2000:]
    parent_id = (sweep_dir / "mlflow_parent_run_id").read_text().strip()
    client = mlflow.MlflowClient()
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 2
    experiment = f"{mlflow_server}/#/experiments/{parent.info.experiment_id}"

    listing = _page_text(browser, f"{experiment}/runs", [parent.info.run_name])
    assert parent.info.run_name in listing, listing[-1500:]

    names = [c.info.run_name for c in children]
    parent_page = _page_text(browser, f"{experiment}/runs/{parent_id}", ["Child runs", *names])
    assert "Child runs" in parent_page and all(n in parent_page for n in names), parent_page[-1500:]

    child = children[0]
    accuracy = child.data.metrics["evaluate.accuracy"]
    expected = ["evaluate.accuracy", "evaluate.probe_accuracy", "init.name", str(accuracy)[:6]]
    child_page = _page_text(browser, f"{experiment}/runs/{child.info.run_id}", expected)
    assert all(e in child_page for e in expected), child_page[-2000:]
    assert parent.info.run_name in child_page  # the child names its parent run
