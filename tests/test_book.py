"""The book: its table of contents, the one repository URL, the committed notebooks, and the
built HTML opened page by page in headless Chromium."""

import base64
import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import execute_notebooks  # noqa: E402  (the tool that writes what this file checks)

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


# What a reader of a page sees, measured in Chromium at a laptop's window size.
LAPTOP = {"width": 1440, "height": 900}
PAGE_MEASUREMENTS = """() => {
    const main = document.querySelector("main");
    const shown = element => element.offsetParent !== null;
    const prose = main.cloneNode(true);
    prose.querySelectorAll("pre, code").forEach(element => element.remove());
    const longestLine = pre => pre.innerText.split("\\n").reduce((a, b) => (b.length > a.length ? b : a), "");
    const isStream = element => element !== null && element.classList.contains("stream");
    return {
        markdownTableText: prose.textContent.match(/\\|\\s*:?-{3,}:?\\s*\\|/g) || [],
        overflowingLines: [...main.querySelectorAll("pre")].filter(shown)
            .filter(pre => pre.scrollWidth > pre.clientWidth + 2)
            .map(pre => longestLine(pre).slice(0, 100)),
        splitOutputs: [...main.querySelectorAll(".cell_output > .output.stream")]
            .filter(output => isStream(output.nextElementSibling))
            .map(output => output.innerText.slice(0, 100)),
        figures: [...main.querySelectorAll("img")].filter(shown).map(image => ({
            src: image.getAttribute("src"), alt: image.getAttribute("alt") || "",
            natural: image.naturalWidth, displayed: image.clientWidth,
        })),
        links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    };
}"""


@pytest.fixture(scope="module")
def measured_pages(site, browser):
    """{page_file: what PAGE_MEASUREMENTS finds on it}, every page of the table of contents."""
    page = browser.new_page(viewport=LAPTOP)
    measured = {}
    for page_file in toc_files():
        page.goto(f"{site}/{page_file}.html", wait_until="networkidle")
        measured[page_file] = page.evaluate(PAGE_MEASUREMENTS)
    page.close()
    return measured


@pytest.mark.parametrize("page_file", toc_files())
def test_page_shows_tables_as_tables_and_never_as_raw_markdown(measured_pages, page_file):
    assert measured_pages[page_file]["markdownTableText"] == []


@pytest.mark.parametrize("page_file", toc_files())
def test_every_code_and_output_line_fits_its_box_at_laptop_width(measured_pages, page_file):
    assert measured_pages[page_file]["overflowingLines"] == []


@pytest.mark.parametrize("page_file", toc_files())
def test_a_cell_prints_its_output_in_one_box(measured_pages, page_file):
    assert measured_pages[page_file]["splitOutputs"] == []


def is_meaningful_alt_text(alt):
    """A sentence about the figure: not empty, not a file name, not a hash."""
    return len(alt.split()) >= 4 and not re.search(r"[0-9a-f]{16}|\.png$|_images/", alt)


@pytest.mark.parametrize("page_file", toc_files())
def test_every_figure_has_alt_text_that_describes_it_and_is_not_blown_up(measured_pages, page_file):
    for figure in measured_pages[page_file]["figures"]:
        assert is_meaningful_alt_text(figure["alt"]), figure
        assert figure["natural"] >= figure["displayed"] > 0, figure  # never enlarged, so never blurred


def target_has_anchor(html, anchor):
    return re.search(rf"""\b(id|name)=["']{re.escape(anchor)}["']""", html) is not None


@pytest.mark.parametrize("page_file", toc_files())
def test_every_link_resolves_to_a_page_of_the_book_and_its_anchor_or_to_an_https_address(
    measured_pages, built_book, site, page_file
):
    for href in measured_pages[page_file]["links"]:
        if not href.startswith(site):
            assert href.startswith(("https://", "mailto:")), href  # not a file name linkified by mistake
            continue
        parts = urlsplit(href)
        target = built_book / unquote(parts.path).lstrip("/")
        target = target / "index.html" if target.is_dir() else target
        assert target.is_file(), href
        if parts.fragment and target.suffix == ".html":
            assert target_has_anchor(target.read_text(), unquote(parts.fragment)), href


def png_dpi(png):
    """The resolution a PNG records in its pHYs chunk (matplotlib writes the figure's dpi), or 0."""
    at = png.find(b"pHYs")
    if at < 0:
        return 0
    pixels_per_unit, _, unit = struct.unpack(">IIB", png[at + 4 : at + 13])
    return round(pixels_per_unit * 0.0254) if unit == 1 else 0


def committed_figures(path):
    for cell in code_cells(path):
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                yield "".join(cell["source"])[:60], base64.b64decode(output["data"]["image/png"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_figures_are_drawn_at_100_dpi_or_more_with_fonts_of_9_points_or_more(path):
    for source, png in committed_figures(path):
        assert png_dpi(png) >= 100, source
    small_fonts = re.compile(r"\b(fontsize|labelsize|size)\s*=\s*([0-8](\.\d*)?|\"(x-|xx-)?small\")[,)\s]")
    for cell in code_cells(path):
        assert not small_fonts.search("".join(cell["source"])), "".join(cell["source"])[:200]


def png_width_inches(png):
    """The width a PNG was drawn at, in inches: its pixels (IHDR) over its dpi (pHYs)."""
    return struct.unpack(">I", png[16:20])[0] / png_dpi(png)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_figures_are_at_most_11_inches_wide_so_9_points_stay_9_pixels_on_a_laptop(path):
    # A page at 1440 px shows a figure about 790 px wide: a figure of w inches is scaled to 790 / w
    # pixels per inch there, and a 9 pt label (1/8 in) stays at 9 px or more up to w = 11.
    for source, png in committed_figures(path):
        assert png_width_inches(png) <= 11.05, source


def test_the_package_is_written_at_the_width_of_the_books_code_boxes():
    # chapters print package functions with inspect.getsource: their lines must fit like the rest
    wide = [f"{path.name}:{number}" for path in sorted((ROOT / "mae_minimal").glob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1) if len(line) > 88]  # fmt: skip
    assert wide == []


def markdown_cells(path):
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_opens_with_what_it_teaches_and_its_measured_run_time_and_ends_with_a_takeaway(path):
    cells = markdown_cells(path)
    opening = re.search(r"```\{admonition\} In this chapter\n(.*?)```", cells[0], re.S)
    assert opening and "You will learn" in opening.group(1), cells[0][-300:]
    claimed = re.search(r"Runs in about (\d+) minutes? on a laptop CPU\.", opening.group(1))
    assert claimed, opening.group(1)[-200:]
    measured = execute_notebooks.measured_minutes(json.loads(path.read_text()))
    assert int(claimed.group(1)) == measured, measured
    assert re.fullmatch(r"```\{admonition\} Key takeaway\n:class: important\n\n[^`]+\.\n```", cells[-1])


def test_citations_are_cite_roles_and_never_written_by_hand():
    pages = [(p.name, cell) for p in NOTEBOOKS for cell in markdown_cells(p)]
    pages += [(p.name, p.read_text()) for p in (ROOT / "book").glob("*.md")]
    for name, text in pages:
        assert not re.search(r"et al\.?,? \(?(19|20)\d\d", text), name
    assert CONFIG["sphinx"]["config"]["bibtex_reference_style"] == "label"  # [1] in the text and the list


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
