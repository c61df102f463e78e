"""Shared by the bench/ scripts: medians with spread, and rewriting their section of a
docs/ page between ``<!-- bench/NAME -->`` markers (appended when missing)."""
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def named_models(ap, entries, defaults: dict) -> dict:
    """``--model NAME=SPEC`` entries (repeatable) on top of ``defaults`` -> {name: spec};
    a malformed entry is an argparse error naming it."""
    models = dict(defaults)
    for m in entries:
        name, sep, spec = m.partition("=")
        if not sep or not name or not spec:
            ap.error(f"--model {m!r}: give NAME=SPEC, e.g. energy=energy")
        models[name] = spec
    return models


def command_line() -> str:
    return " ".join(["python"] + [str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute()
                                   else sys.argv[0]] + sys.argv[1:])


def med_spread(values, fmt="{:.1f}") -> tuple[float, str]:
    """-> (median, "min-max") of a list of numbers."""
    return statistics.median(values), f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def write_section(doc: str, name: str, header: str, body: str) -> None:
    path = ROOT / "docs" / doc
    text = path.read_text() if path.exists() else "# Performance\n"
    block = f"<!-- {name} -->\n{header}\n\n{body}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def machine() -> str:
    """The CPU the numbers came from: this project's build machines have been AMD EPYC and
    Intel Xeon (AVX-512) 2-core machines, which differ by up to 2x on the same network."""
    import os
    import platform
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = " ".join(value.split())
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    isa = next((f for f in ("avx512f", "avx2", "asimd") if f in flags), "")
    return f"{name}{', ' + isa if isa else ''}, {os.cpu_count()} cores"


def stamp(extra: str) -> str:
    return f"{extra}, {time.strftime('%Y-%m-%d')}, {machine()}, `{command_line()}`"


def save_plot(draw, name: str, size=(7, 4)) -> None:
    """docs/NAME from ``draw(ax)`` (matplotlib, no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / name, dpi=100)
    plt.close(fig)


def git_commit() -> str:
    """The tree's commit (short), with "+changes" when a file under bench/ or the
    package differs from it: what the numbers were measured with."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bench", "python", "training"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")
