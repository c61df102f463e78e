"""`rfdetect serve`'s pages in headless Chromium (Debian's /usr/bin/chromium driven by
Playwright; nothing downloads a browser): create a job from the form and watch its
progress bar and loss curve move, cancel it, compare two models, export, see live
detections arrive from a real GNU Radio flowgraph publishing over ZeroMQ, and run a
model on a recording. Screenshots go to the test's tmp folder (SCREENSHOTS below)."""
import os
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, RATE, SMALL_ARGS
from gnuradio.rfdetect.apps.synth import synth_dataset
from test_web_api import SMALL_Q, Server, free_port

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("RFDETECT_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no system Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
WAIT_MS = 90_000


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = tmp_path_factory.mktemp("screenshots")
    print(f"screenshots in {d}")
    return d


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("webpages")
    synth_dataset(root / "data", n=3, seed=3, sample_rate=RATE, duration=0.3, snr_db=(12.0, 25.0), n_signals=6)
    zmq = f"tcp://127.0.0.1:{free_port()}"
    s = Server(root / "data", root / "models", zmq=zmq).start()
    s.zmq_address = zmq
    yield s
    s.stop()


@pytest.fixture(scope="module")
def page(site):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(WAIT_MS)
        errors, elsewhere = [], []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        # air-gapped: every request the pages make goes to the service itself
        pg.on("request", lambda r: None if r.url.startswith(site.url + "/") else elsewhere.append(r.url))
        yield pg
        browser.close()
        assert not errors, f"JavaScript errors: {errors}"
        assert not elsewhere, f"requests to other hosts: {elsewhere}"


def _tiny_job(site, name):
    recs = sorted(p.name for p in site.data.glob("*.sigmf-meta"))[:2]
    r = site.client.post("/api/jobs", json={"recordings": recs, "arch": "two_stage", "epochs": 2, "k_folds": 0,
                                            "threads": 1, "name": name, **SMALL_Q})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_compare_two_models_and_export(site, page, shots):
    a, b = _tiny_job(site, "tiny A"), _tiny_job(site, "tiny B")
    site.wait_job(a, ("done",))
    site.wait_job(b, ("done",))
    page.goto(site.url + "/training")
    page.wait_for_selector(f"#jobs tr[data-id='{a}'] .state-done")
    page.check(f"#jobs input[value='{a}']")
    page.check(f"#jobs input[value='{b}']")
    page.click("#compare")
    table = page.wait_for_selector("#compare-table")
    heads = [h.inner_text() for h in table.query_selector_all("thead th")]
    assert heads[0] == "metric" and sorted(heads[1:]) == sorted([f"job {a}", f"job {b}"])
    assert "tile AP50" in table.inner_text() and "validation F1" in table.inner_text()
    page.screenshot(path=str(shots / "training.png"), full_page=True)
    # the job page of a finished job: its curves, and Export reports the export's validation
    page.goto(f"{site.url}/training/jobs/{a}")
    page.wait_for_function("Number(document.querySelector('#loss').dataset.points || 0) >= 4")
    # 2 epochs x AP50, mAP50, precision, recall, F1
    page.wait_for_function("Number(document.querySelector('#metrics').dataset.points || 0) >= 10")
    heads = [h.inner_text() for h in page.query_selector_all("#epochs thead th")]
    assert {"precision", "recall", "F1"} <= set(heads)
    f1 = page.query_selector_all("#epochs tbody tr")[0].query_selector_all("td")[heads.index("F1")].inner_text()
    assert 0.0 <= float(f1) <= 1.0
    page.click("#export")
    assert page.wait_for_selector("#export-valid").inner_text() == "valid"
    assert "ONNX Runtime vs PyTorch" in page.inner_text("#export-result")
    page.screenshot(path=str(shots / "job_done.png"), full_page=True)


def test_create_a_job_from_the_form_watch_it_and_cancel_it(site, page, shots):
    page.goto(site.url + "/training")
    page.wait_for_selector("#recs input")
    boxes = page.query_selector_all("#recs input")
    for box in boxes[:2]:
        box.check()
    for k, v in SMALL_Q.items():
        page.fill(f"#form [name={k}]", str(v))
    page.fill("#form [name=name]", "from the form")
    page.fill("#form [name=threads]", "1")
    page.fill("#form [name=early_stop]", "1000")
    page.fill("#form [name=epochs]", "300")
    page.wait_for_selector("#est-time")
    assert page.get_attribute("#form [name=batch_size]", "placeholder") == "4"  # the auto-tuned value
    page.click("#create")
    page.wait_for_url("**/training/jobs/*")
    job_id = int(page.url.rsplit("/", 1)[1])
    page.wait_for_function("Number(document.querySelector('#loss').dataset.points || 0) >= 4")
    p1 = float(page.get_attribute("#progress", "data-percent"))
    n1 = int(page.get_attribute("#loss", "data-points"))
    page.wait_for_function(f"Number(document.querySelector('#loss').dataset.points) > {n1} && "
                           f"Number(document.querySelector('#progress').dataset.percent) > {p1}")
    assert "%" in page.inner_text("#cpu-text")
    page.screenshot(path=str(shots / "job_running.png"), full_page=True)
    page.click("#cancel")
    page.wait_for_selector("#state .state-cancelled")
    assert site.client.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled"


def test_live_view_shows_detections_from_a_running_flowgraph(site, page, shots, tmp_path):
    page.goto(site.url + "/live")
    page.wait_for_selector("#source:has-text('subscribed')")
    rec = sorted(site.data.glob("*.sigmf-meta"))[0]
    # a real GNU Radio flowgraph (rfdetect detect) publishing over ZeroMQ to the service
    proc = subprocess.run([str(BIN / "rfdetect"), "detect", str(rec), "--model", "energy", "--zmq", site.zmq_address,
                           "--zmq-wait", "10", "--out", str(tmp_path / "d.jsonl"), "--quiet", *SMALL_ARGS],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sent = sum(1 for _ in open(tmp_path / "d.jsonl"))
    page.wait_for_function(f"Number(document.querySelector('#n-records').textContent) >= {sent}")
    page.wait_for_selector("#models td:has-text('energy')")
    # the Detector's statistics reached the page: the model's backend and latency
    page.wait_for_selector("#models td:has-text('numpy')")
    assert int(page.inner_text("#n-tracks")) >= 1
    assert int(page.get_attribute("#tf", "data-tracks")) >= 1 and int(page.get_attribute("#tf", "data-detections")) >= 1
    page.screenshot(path=str(shots / "live.png"), full_page=True)


def test_run_a_model_on_a_recording_beside_its_ground_truth(site, page, shots):
    page.goto(site.url + "/recordings")
    page.wait_for_selector("#models td:has-text('default')")
    page.select_option("#model", "energy")
    page.click("#run")
    page.wait_for_selector("#run-status:has-text('detections')")
    page.wait_for_function("document.querySelector('#result').naturalWidth > 0")
    text = page.inner_text("#boxes")
    assert "found" in text and "truth" in text
    page.wait_for_function("document.querySelectorAll('#recordings img').length === 3 && "
                           "[...document.querySelectorAll('#recordings img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(shots / "recordings.png"), full_page=True)


def test_the_api_page_lists_every_endpoint_without_the_internet(site, page, shots):
    page.goto(site.url + "/docs")
    page.wait_for_selector("#endpoints tr[data-path='/detect'][data-method='post']")
    spec = site.client.get("/openapi.json").json()
    n = sum(len(ops) for ops in spec["paths"].values())
    assert len(page.query_selector_all("#endpoints tbody tr")) == n
    assert "413" in page.inner_text("#endpoints tr[data-path='/detect']")
    page.screenshot(path=str(shots / "api.png"), full_page=True)
