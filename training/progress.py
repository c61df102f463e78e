"""Progress bars (tqdm) that stay quiet in logs and on other ranks."""
import sys

from tqdm import tqdm


def progress_bar(iterable=None, enable: bool = True, **kw):
    return tqdm(iterable, disable=not enable, file=sys.stderr, dynamic_ncols=True, leave=False, **kw)
