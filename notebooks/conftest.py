"""What nbval compares in the notebooks: what a chapter computes, not how a library renders it.

A cell that shows source with `IPython.display.Code` stores three renderings of the same text:
text/plain (the source itself), text/html and text/latex (Pygments' highlighting, which changes
between Pygments releases). The book shows the highlighted HTML; nbval compares the plain text.
tests/test_book.py checks that every skipped rendering has such a plain-text twin.
"""

from nbval.plugin import IPyNbFile

LIBRARY_RENDERINGS = ("text/html", "text/latex")


def pytest_collectstart(collector):
    if isinstance(collector, IPyNbFile):
        collector.skip_compare = tuple(collector.skip_compare) + LIBRARY_RENDERINGS
