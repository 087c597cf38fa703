"""The speed stage: cheap (reuses the teachers' throughput measured while filling the cache)
and honest (interleaved passes, best of several, machine load recorded, noise marked)."""

import itertools
import logging
import time

import pytest
from datasets import DatasetDict, load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sead import speed, teachers
from sead.tasks import get_task

SST2 = get_task("sst2")


@pytest.fixture
def tiny(tiny_assets):
    folder = tiny_assets / "models" / "student"
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    files = str(tiny_assets / "data" / "sst2_toy" / "validation.jsonl")
    splits = DatasetDict({"validation": load_dataset("json", data_files=files, split="train")})
    return model, tokenizer, splits


class Prepared(teachers.Teacher):
    """A prepared teacher (as `teachers.prepare` returns it) whose `load` is the test's."""

    def __init__(self, name, load):
        base = dict(source="x", finetune=True, tokenizer=None, revision=None)
        base |= dict(max_length=32, trust_remote_code=False, batch_size=8)
        spec = teachers.TeacherSpec(name=name, **base)
        super().__init__(spec, "x", "x", "x", "x")
        self._load = load

    def load(self):
        return self._load()


def _teachers(*names, load):
    return {name: Prepared(name, load) for name in names}


def _compare(tiny, prepared, **kwargs):
    model, tokenizer, splits = tiny
    return speed.compare(
        model, tokenizer, max_length=32, task=SST2, teachers=prepared, splits=splits,
        n=16, batch_size=8, **kwargs,
    )  # fmt: skip


def test_the_student_is_timed_by_the_clock_that_timed_the_teachers(tiny, monkeypatch):
    """Reused teacher figures count forward passes alone: so does the student's, not the wall
    time of its batches (tokenized rows collated, logits copied back)."""
    model, tokenizer, splits = tiny
    sample = splits["validation"].select(range(16))
    wall = speed._Timed(model, tokenizer, sample, SST2, 32, 8)
    forward = speed._Timed(model, tokenizer, sample, SST2, 32, 8, forward_only=True)
    real = speed.predict_logits

    def slow_collation(*args):  # time outside the forward passes
        time.sleep(0.05)
        return real(*args)

    monkeypatch.setattr(speed, "predict_logits", slow_collation)
    wall.one_pass()
    forward.one_pass()
    assert forward.seconds[0] < wall.seconds[0] - 0.04
    assert not model._forward_hooks and not model._forward_pre_hooks  # taken off again


def test_teachers_measured_while_filling_the_cache_are_not_loaded_again(tiny, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a teacher measured in this run must not be reloaded")

    monkeypatch.setattr(teachers, "prepare", fail)  # nor prepared a second time
    prepared = _teachers("a", "b", load=fail)
    result = _compare(tiny, prepared, measured={"a": 100.0, "b": 50.0})
    assert result["method"] == speed.REUSED  # forward passes alone, the student's too
    assert result["examples_per_second"]["a"] == 100.0
    student = result["examples_per_second"]["student"]
    assert result["speedup"]["b"] == pytest.approx(student / 50.0, rel=0.01)
    assert result["load_average"]["before"] is None or len(result["load_average"]["before"]) == 3


def test_otherwise_models_are_timed_interleaved_and_noisy_figures_marked(tiny, monkeypatch, caplog):
    model, tokenizer, _ = tiny

    def prepare_again(*args, **kwargs):
        raise AssertionError("the speed stage times the run's prepared teachers")

    monkeypatch.setattr(teachers, "prepare", prepare_again)
    prepared = _teachers("a", "b", load=lambda: (model, tokenizer))
    order = []
    # student steady; teacher b's passes vary by 2x (a burst of load mid-measurement)
    durations = {"student": itertools.repeat(0.1), "a": itertools.repeat(0.4)}
    durations["b"] = itertools.cycle([0.4, 0.8])
    names = {}

    def one_pass(self):
        name = names[id(self)]
        order.append(name)
        self.seconds.append(next(durations[name]))

    real_init = speed._Timed.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        names[id(self)] = ["student", "a", "b"][len(names)]

    monkeypatch.setattr(speed._Timed, "__init__", init)
    monkeypatch.setattr(speed._Timed, "one_pass", one_pass)
    with caplog.at_level(logging.WARNING):
        result = _compare(tiny, prepared, measured={"a": 100.0, "b": None}, passes=3)
    assert order == ["student", "a", "b"] * 3  # interleaved, not one model after another
    assert result["method"] == "interleaved"
    assert result["examples_per_second"] == {"student": 160.0, "a": 40.0, "b": 40.0}  # best pass
    assert result["speedup"] == {"a": 4.0, "b": 4.0}
    assert result["noisy"] == ["b"] and result["spread"]["b"] == 1.0
    assert "Speed figures for b are noisy" in caplog.text and "25%" in caplog.text
