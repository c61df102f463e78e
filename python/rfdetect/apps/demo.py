"""``make demo``: a synthetic recording through the real flowgraph with the default model."""
import sys
import time
from pathlib import Path

from .cli import main as cli_main

DEMO_DIR = Path("demo_out")
SEED = 7


def main(argv=None):
    DEMO_DIR.mkdir(exist_ok=True)
    rec = DEMO_DIR / f"synth_{SEED}_0000.sigmf-meta"
    if not rec.exists():
        print("== generating a labelled synthetic recording (rfdetect synth)", flush=True)
        rc = cli_main(["synth", str(DEMO_DIR), "--n", "1", "--seed", str(SEED), "--duration", "2.0",
                       "--signals", "20"])
        if rc:
            return rc
    print(f"== rfdetect detect {rec} --model default (GNU Radio flowgraph, file mode)", flush=True)
    t0 = time.perf_counter()
    rc = cli_main(["detect", str(rec), "--model", "default", "--out", str(DEMO_DIR / "detections.jsonl"),
                   "--sigmf-out", str(DEMO_DIR / "annotated"), "--plot", str(DEMO_DIR / "detections.png")])
    if rc == 0:
        print(f"== done in {time.perf_counter() - t0:.1f} s: {DEMO_DIR}/detections.jsonl, "
              f"{DEMO_DIR}/annotated.sigmf-meta, {DEMO_DIR}/detections.png")
    return rc


if __name__ == "__main__":
    sys.exit(main())
