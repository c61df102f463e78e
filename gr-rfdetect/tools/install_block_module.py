#!/usr/bin/env python3
"""Puts the C++ block module that CMake built (rfdetect_python*.so) into the package that
pip installed in this Python's environment: `make native` runs it with the .venv's Python.

    python gr-rfdetect/tools/install_block_module.py BUILT_PACKAGE_DIR

* pip installed the package (`pip install .`): the module goes beside
  site-packages/gnuradio/rfdetect/__init__.py and its line is added to the install's
  RECORD, so that pip's next uninstall (a reinstall, or a switch to `pip install -e .`)
  removes it with the rest. Without that line pip left the module behind in a folder with
  no __init__.py, a namespace package that hides an editable install's package
  (`gnuradio.rfdetect` then imports as an empty namespace).
* pip installed it editable (`pip install -e .`): the module goes into python/rfdetect/
  (ignored by git), beside the kernel module pip built there.
* Such a leftover folder from an earlier install is cleared first.

The module is copied to a new file renamed over the old one: a process that has the old
module loaded keeps its mapping (rewriting a loaded .so in place crashes that process).
Runs again without harm (idempotent).
"""
import glob
import os
import shutil
import sys
import sysconfig


def clear_leftover(purelib):
    """site-packages/gnuradio/rfdetect without __init__.py: what an uninstall left."""
    stale = os.path.join(purelib, "gnuradio", "rfdetect")
    if not os.path.isdir(stale) or os.path.exists(os.path.join(stale, "__init__.py")):
        return
    for so in glob.glob(os.path.join(stale, "rfdetect_python*.so")):
        os.remove(so)
    for root, _dirs, _files in os.walk(stale, topdown=False):  # empty folders only
        shutil.rmtree(os.path.join(root, "__pycache__"), ignore_errors=True)
        try:
            os.rmdir(root)
        except OSError:
            pass
    if os.path.isdir(stale):
        sys.exit(f"{stale} has no __init__.py but holds other files: it hides the installed "
                 "gnuradio.rfdetect; remove it")
    print(f"== removed a leftover {stale} (an uninstall's; it hid the package)")


def add_to_record(purelib, installed):
    records = glob.glob(os.path.join(purelib, "gr_rfdetect-*.dist-info", "RECORD"))
    if not records:
        return
    line = os.path.relpath(installed, purelib).replace(os.sep, "/") + ",,"
    with open(records[0]) as f:
        if line in f.read().splitlines():
            return
    with open(records[0], "a") as f:
        f.write(line + "\n")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    built = sorted(glob.glob(os.path.join(sys.argv[1], "rfdetect_python*.so")))
    if not built:
        sys.exit(f"no rfdetect_python*.so in {sys.argv[1]}: build gr-rfdetect/ with CMake first")
    purelib = os.path.realpath(sysconfig.get_paths()["purelib"])
    clear_leftover(purelib)
    import gnuradio.rfdetect as pkg
    if not getattr(pkg, "__file__", None):
        sys.exit(f"gnuradio.rfdetect imports as a namespace package ({list(pkg.__path__)}): is the package "
                 "installed (pip install .)?")
    dest_dir = os.path.dirname(os.path.realpath(pkg.__file__))
    for so in built:
        dest = os.path.join(dest_dir, os.path.basename(so))
        tmp = os.path.join(dest_dir, "." + os.path.basename(so) + ".new")
        shutil.copy2(so, tmp)
        os.replace(tmp, dest)
        if os.path.commonpath([dest_dir, purelib]) == purelib:  # not editable: pip's RECORD
            add_to_record(purelib, dest)
    print(f"== the C++ block module -> {dest_dir}")


if __name__ == "__main__":
    main()
