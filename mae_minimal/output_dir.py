"""The folder a tool (train.py, evaluate.py) writes to, checked before any work
starts."""

import os
from pathlib import Path


def check_output_dir(path):
    """Raise a ValueError, creating nothing, when --output_dir `path` could not be
    written: it is a file, or it is missing and its nearest existing parent is a file or
    not writable."""
    path = Path(path)
    existing = next(
        folder for folder in (path, *path.absolute().parents) if folder.exists()
    )
    if existing == path and not path.is_dir():
        raise ValueError(f"--output_dir {path} is a file, not a folder")
    if not existing.is_dir():
        raise ValueError(
            f"--output_dir {path} cannot be created: {existing} is a file, not a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"--output_dir {path} cannot be written: "
            f"{existing} is not writable by this user"
        )
