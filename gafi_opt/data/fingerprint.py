"""Which real train set a run directory's models were trained on.

The filter classifier (`filter.pt`) and the generator checkpoints are cached in the run
directory and reused whenever they exist. A pipeline with another real subset (another
`data.real_fraction`, split seed or source) pointed at the same run directory would
silently reuse models trained on different images; recording the train set beside them
turns that into an error. `data.json` holds a digest of the train images and labels, so
the check is exact and cheap to repeat.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gafi_opt.data.sources import RealData
from gafi_opt.errors import GafiError
from gafi_opt.spec import Spec

RUN_DATA_FILE = "data.json"


def train_set_record(spec: Spec, data: RealData) -> dict:
    digest = hashlib.sha256()
    digest.update(data.train_x.contiguous().numpy().tobytes())
    digest.update(data.train_y.contiguous().numpy().tobytes())
    return {
        "dataset": data.name,
        "real_fraction": spec.data.real_fraction,
        "split_seed": spec.data.split_seed,
        "train_images": int(data.train_y.numel()),
        "sha256": digest.hexdigest(),
    }


def bind_run_data(spec: Spec, data: RealData) -> dict:
    """Record the train set in the run directory, or check it is the one recorded there."""
    path = Path(spec.run_path) / RUN_DATA_FILE
    record = train_set_record(spec, data)
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            stored_digest = stored["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GafiError(f"cannot read {path}: {exc}") from None
        if stored_digest != record["sha256"]:
            raise GafiError(
                f"{spec.run_path} holds models trained on another real train set "
                f"({stored.get('dataset')}, {stored.get('train_images')} images, real_fraction {stored.get('real_fraction')}) "
                f"than this spec's ({record['dataset']}, {record['train_images']} images, real_fraction {record['real_fraction']}); "
                "use another run_dir (or name)"
            )
        return stored
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return record
