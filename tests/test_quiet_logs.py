"""Library noise a newcomer should not have to read: transformers' LOAD REPORT for a head
sead initialises on purpose, and a "Generating train split" bar for every local jsonl."""

import json
import logging
import shutil

from transformers import AutoModelForSequenceClassification

from sead import data
from sead.checkpoints import from_pretrained_with_new_head
from sead.tasks import get_task
from tests.helpers import settings


def test_a_new_head_is_said_once_in_seads_words_not_as_a_load_report(tiny_assets, caplog):
    base = tiny_assets / "models" / "student"
    reports = _Records()
    transformers_log = logging.getLogger("transformers.modeling_utils")
    transformers_log.addHandler(reports)
    try:
        with caplog.at_level(logging.INFO, logger="sead"):
            model = from_pretrained_with_new_head(
                AutoModelForSequenceClassification,
                base,
                "Student",
                num_labels=3,  # cb's three labels: a head the base checkpoint lacks
            )
        assert model.config.num_labels == 3
        assert not [m for m in reports.messages if "LOAD REPORT" in m]
        said = [m for m in caplog.messages if "a new task head" in m]
        assert len(said) == 1 and said[0].startswith("Student: a new task head (classifier)")
        # Outside sead's loads, transformers reports as it always does.
        AutoModelForSequenceClassification.from_pretrained(base, num_labels=3)
        assert [m for m in reports.messages if "LOAD REPORT" in m]
    finally:
        transformers_log.removeHandler(reports)


def test_missing_encoder_weights_are_warned_about_not_called_a_new_head(
    tiny_assets, tmp_path, caplog
):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "student"
    shutil.copytree(tiny_assets / "models" / "student", broken)
    weights = load_file(str(broken / "model.safetensors"))
    kept = {k: v for k, v in weights.items() if ".layer.1." not in k}  # an encoder layer lost
    save_file(kept, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with caplog.at_level(logging.INFO, logger="sead"):
        from_pretrained_with_new_head(
            AutoModelForSequenceClassification, broken, "Student", num_labels=2
        )
    (warned,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned.startswith(f"Student: {len(weights) - len(kept)} weights of the encoder itself")
    head = [m for m in caplog.messages if "a new task head" in m]
    assert head == [] or ".layer.1." not in head[0]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_local_jsonl_splits_load_without_a_progress_bar_each(tmp_path, capfd):
    folder = tmp_path / "cb"
    folder.mkdir()
    for split in ("train", "validation"):
        row = {"premise": "a", "hypothesis": "b", "label": 0, "idx": 0}
        (folder / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
    splits = data.load_splits(
        get_task("cb"), settings("data", dir=str(folder)), ["train", "validation"]
    )
    assert set(splits) == {"train", "validation"}
    printed = capfd.readouterr()
    assert "Generating" not in printed.out + printed.err
