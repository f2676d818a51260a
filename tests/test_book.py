"""The book: its table of contents, the one repository URL, the committed notebooks, and the
built HTML opened page by page in headless Chromium."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Renderings that nbval does not compare (notebooks/conftest.py): a library draws them, and they
# change with its version. Each must have a text/plain twin that carries the same content.
LIBRARY_RENDERINGS = ("text/html", "text/latex")


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]


def code_cells(path):
    return [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]


def test_the_table_of_contents_lists_every_notebook_in_order():
    listed = [f for f in toc_files() if f.startswith("notebooks/")]
    assert listed == [f"notebooks/{path.stem}" for path in NOTEBOOKS] and NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_installs_from_the_configured_repository_in_its_first_cell(path):
    assert f"git+{CONFIG['repository']['url']}" in "".join(code_cells(path)[0]["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_in_order_without_errors(path):
    cells = code_cells(path)
    skipped = [c for c in cells if "nbval-skip" in c.get("metadata", {}).get("tags", [])]
    counts = [c["execution_count"] for c in cells if c not in skipped]
    assert None not in counts and counts == sorted(counts) and len(set(counts)) == len(counts)
    assert not any(output["output_type"] == "error" for cell in cells for output in cell.get("outputs", []))
    assert all("skip-execution" in c["metadata"]["tags"] and not c.get("outputs") for c in skipped)
    assert path.stat().st_size < 3_000_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_output_nbval_skips_has_a_plain_text_twin_that_it_compares(path):
    for cell in code_cells(path):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if any(kind in data for kind in LIBRARY_RENDERINGS):
                plain = "".join(data.get("text/plain", ""))
                assert plain and not plain.startswith("<"), (cell["source"][:1], plain[:80])


@pytest.mark.parametrize("page_file", toc_files())
def test_page_renders_with_its_figures_and_no_console_errors(site, browser, page_file):
    page = browser.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    response = page.goto(f"{site}/{page_file}.html", wait_until="networkidle")
    assert response.status == 200
    assert page.locator("main h1").count() >= 1 and len(page.inner_text("main")) > 500
    broken = page.evaluate(
        "() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
    )
    assert broken == []
    assert errors == []
    assert [url for url in requested if not url.startswith(site)] == []  # everything is served with the book
    if page_file.startswith("notebooks/"):
        colab = f"colab.research.google.com/github/{CONFIG['repository']['url'].split('github.com/')[1]}"
        assert page.locator(f"a[href*='{colab}/blob/main/{page_file}.ipynb']").count() >= 1
        assert page.locator(".dropdown-download-buttons a[href$='.ipynb']").count() >= 1
        assert page.locator("img").count() >= 1  # a notebook page shows figures
    page.close()


def notebook_with_output(source, data):
    cell = {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": source,
            "outputs": [{"output_type": "display_data", "metadata": {}, "data": data}]}  # fmt: skip
    return {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.mark.parametrize(
    "plain, expected_exit", [("print('hi')", 0), ("something else", 1)], ids=["same text", "other text"]
)
def test_nbval_compares_the_plain_text_of_shown_code_and_not_its_highlighted_html(tmp_path, plain, expected_exit):
    """A cell showing code passes whatever HTML a Pygments release draws, and fails when the code differs."""
    (tmp_path / "conftest.py").write_text((ROOT / "notebooks" / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    source = "from IPython.display import Code\nCode(\"print('hi')\", language='python')"
    stale_html = "<div class='highlight'>an older Pygments' markup</div>"
    data = {"text/plain": plain, "text/html": stale_html, "text/latex": "\\begin{Verbatim}\\end{Verbatim}"}
    (tmp_path / "shown.ipynb").write_text(json.dumps(notebook_with_output(source, data)))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
                             "--nbval-current-env", "shown.ipynb"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == expected_exit, result.stdout[-3000:]
