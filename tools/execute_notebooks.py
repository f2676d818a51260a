"""Execute chapters in place, then tidy what the book's tests check about them.

    python tools/execute_notebooks.py notebooks/03_encoder.ipynb [more notebooks]

After executing (as nbval will validate it: default threads, the notebook's own settings),
each notebook gets the two things tests/test_book.py asks of a committed run:
- its opening's "Runs in about N minutes on a laptop CPU." says the measured execution time;
- consecutive printed outputs of a cell are joined into one (one box on the page, same text).
"""

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

RUNTIME = re.compile(r"Runs in about \d+ minutes? on a laptop CPU\.")


def execution_seconds(notebook):
    """The time the cells spent executing, from the execution metadata of each code cell."""
    total = 0.0
    for cell in notebook["cells"]:
        times = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in times and "shell.execute_reply" in times:
            start, end = (
                datetime.fromisoformat(times[key].replace("Z", "+00:00"))
                for key in ("iopub.execute_input", "shell.execute_reply")
            )
            total += (end - start).total_seconds()
    return total


def measured_minutes(notebook):
    """The run time a chapter's opening states: its execution time in whole minutes, at
    least 1."""
    return max(1, round(execution_seconds(notebook) / 60))


def state_runtime(notebook):
    minutes = measured_minutes(notebook)
    sentence = f"Runs in about {minutes} minute{'s' if minutes != 1 else ''} on a laptop CPU."
    opening = notebook["cells"][0]
    text = RUNTIME.sub(sentence, "".join(opening["source"]))
    opening["source"] = text.splitlines(keepends=True)
    return minutes


def join_printed_outputs(cell):
    joined = []
    for output in cell.get("outputs", []):
        previous = joined[-1] if joined else None
        if (
            previous is not None
            and output["output_type"] == previous["output_type"] == "stream"
            and output["name"] == previous["name"]
        ):
            text = "".join(previous["text"]) + "".join(output["text"])
            previous["text"] = text.splitlines(keepends=True)
        else:
            joined.append(output)
    if "outputs" in cell:
        cell["outputs"] = joined


def main(paths):
    for path in map(Path, paths):
        subprocess.run(
            [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
             "--inplace", "--ExecutePreprocessor.timeout=1800", str(path)],
            check=True,
        )  # fmt: skip
        notebook = json.loads(path.read_text())
        minutes = state_runtime(notebook)
        for cell in notebook["cells"]:
            join_printed_outputs(cell)
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        print(f"{path}: executed, runs in about {minutes} min")


if __name__ == "__main__":
    main(sys.argv[1:])
