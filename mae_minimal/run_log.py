"""What a training run reports as it goes: log.jsonl (one JSON line per logged step),
TensorBoard events and a progress bar. Only rank 0 writes; on other ranks every method
does nothing."""

import json
from pathlib import Path

from tqdm import tqdm


class RunLog:
    def __init__(
        self, output_dir, first_step, last_step, enabled=True, progress_bar=True
    ):
        self.enabled = enabled
        self.path = Path(output_dir) / "log.jsonl"
        self.progress = tqdm(
            total=last_step,
            initial=first_step,
            unit="step",
            dynamic_ncols=True,
            disable=not (enabled and progress_bar),
        )
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.forget_after(first_step)
            self.writer = SummaryWriter(
                Path(output_dir) / "tensorboard", purge_step=first_step
            )

    def forget_after(self, step):
        """Drop the lines of steps after `step`: a resumed run logs those steps
        again."""
        if self.path.exists():
            lines = [
                line
                for line in self.path.read_text().splitlines()
                if json.loads(line)["step"] <= step
            ]
            self.path.write_text("".join(line + "\n" for line in lines))

    def step_done(self):
        self.progress.update()

    def write(self, record):
        """record: a dict with "step" and numbers; appended to log.jsonl and plotted in
        TensorBoard."""
        if not self.enabled:
            return
        with open(self.path, "a") as log:
            log.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step":
                self.writer.add_scalar(f"train/{key}", value, record["step"])
        self.progress.set_postfix(
            {k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "lr")} or None
        )

    def close(self):
        self.progress.close()
        if self.writer is not None:
            self.writer.close()


def training_records(output_dir):
    """The records of a run's log.jsonl that carry a training loss, in step order (a
    finished run also logs its held-out errors): a list of dicts."""
    lines = (Path(output_dir) / "log.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "loss" in record]
