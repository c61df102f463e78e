"""bench/quality.py, run as people run it, on two small recordings: what it writes about how
far each AP50 could move with other recordings, and where a model is below `energy`."""
import json
import subprocess
import sys

from conftest import ROOT


def test_quality_gives_each_ap_its_spread_and_compares_with_energy_draw_by_draw(synth_dir, tmp_path):
    out = tmp_path / "q"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "quality.py"), "--no-write", "--no-default-models",
         "--model", "energy=energy", "--model", "strict=energy?score=0.9", "--set", f"small={synth_dir}",
         "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "results.json").read_text())["results"]["small"]
    assert set(res) == {"energy", "strict"}
    for m, r in res.items():
        lo, hi = r["ap50"]["class_agnostic_AP_interval"]
        assert 0.0 <= lo <= hi <= 1.0
        assert r["ap50_by_snr"], m
        for band, v in r["ap50_by_snr"].items():
            assert len(v["interval"]) == 2 and v["interval"][0] <= v["interval"][1], (m, band)
            # a model is not compared with itself
            assert ("below_energy_share" in v) == (m == "strict"), (m, band)
            if m == "strict":
                # strict is energy with a higher threshold, and AP sees every box down to the AP
                # floor in both: the same boxes, so on paired draws never below
                assert v["below_energy_share"] == 0.0, band
        assert (out / "small" / m / "report.json").is_file()
    assert res["strict"]["ap50"]["class_agnostic_AP"] == res["energy"]["ap50"]["class_agnostic_AP"]
    assert any(line.startswith("| small | strict |") and line.endswith("| none |") for line in proc.stdout.splitlines())
    # the table prints each AP50 with its 5-95 % range
    lo, hi = res["energy"]["ap50"]["class_agnostic_AP_interval"]
    assert f"({lo:.2f}-{hi:.2f})" in proc.stdout
