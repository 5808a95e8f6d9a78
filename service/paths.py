"""Every path under the data directory, named in one place (the server and the worker share the folder).

```
<data-dir>/service.db                 SQLite database (unless --database-url names another)
<data-dir>/datasets/<name>            uploaded data sets and files POST /train may name
<data-dir>/models/<model_id>/         registered model directories (encoder.pt + model.json + report)
<data-dir>/models/.runs/<job_id>/     a training job's checkpoints, kept until the job ends
<data-dir>/index/                     FAISS snapshots
```
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataDir:
    """The layout of one data directory; pure path arithmetic, no I/O."""

    root: Path

    @property
    def db_file(self) -> Path:
        return self.root / "service.db"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def runs(self) -> Path:
        return self.models / ".runs"

    @property
    def index(self) -> Path:
        return self.root / "index"

    def model_dir(self, model_id: str) -> Path:
        return self.models / model_id

    def run_dir(self, job_id: str) -> Path:
        """Checkpoints live per job, so a later job reusing a model name never resumes a stranger's run."""
        return self.runs / job_id

    def relative(self, path: str | Path) -> str:
        """How a path under the data directory is shown to API users: relative, never the server's layout."""
        path = Path(path)
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return path.name

    def hide(self, text: str) -> str:
        """The last guard before an answer: the data directory's absolute path, anywhere, becomes
        ``<data-dir>`` (stored messages are already relative, see ``scrub``)."""
        for path in {str(self.root.resolve()), str(self.root.absolute())}:
            text = text.replace(path, "<data-dir>")
        return text

    def scrub(self, message: str) -> str:
        """A message to store for API users (a job's error), with paths under the data directory made
        relative where a path starts."""
        root = re.escape(str(self.root.resolve()).rstrip(os.sep) + os.sep)
        return re.sub(rf"(?<![^\s'\"(\[]){root}", "", message)  # only where a path starts
