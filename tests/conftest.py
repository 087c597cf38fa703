"""Fixtures: tiny models and a toy task built in-process, so no test touches the network."""

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
# Tiny models gain nothing from threads, and on a busy 2-core machine (or with two DDP
# ranks) a second thread per process makes torch many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from sead import toy  # noqa: E402
from tests.helpers import compose  # noqa: E402

TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """The demo's layout (data/sst2_toy, models/{teacher_bert,teacher_roberta,student}), tiny."""
    root = tmp_path_factory.mktemp("assets")
    toy.make_toy_task(root / "data" / "sst2_toy", n_train=240, n_validation=120)
    for seed, (name, kind, arch) in enumerate(
        [
            ("teacher_bert", "wordpiece", "bert"),
            ("teacher_roberta", "bpe", "roberta"),
            ("student", "wordpiece", "bert"),
        ]
    ):
        folder = root / "models" / name
        toy.build_tokenizer(kind, folder)
        toy.build_tiny_model(arch, folder, folder, seed=seed, **TINY)
    return root


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory):
    """The offline demo's own assets (`sead toy`): 2,000 toy examples, teachers that learn."""
    root = tmp_path_factory.mktemp("demo_assets")
    toy.build_demo_assets(root)
    return root


@pytest.fixture
def tiny_overrides(tiny_assets, tmp_path) -> list[str]:
    """`experiment=demo` on the tiny assets, quick to run, its cache in the test's tmp dir."""
    return [
        "experiment=demo",
        f"paths.demo_dir={tiny_assets}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "train.epochs=1",
        "teachers.toy_bert.finetune_args.epochs=1",
        "teachers.toy_roberta.finetune_args.epochs=1",
        # One epoch leaves these teachers near chance, as fast plumbing tests want;
        # the sanity gate is tested on teachers that learn (tests/test_teachers.py).
        "teacher_gate=false",
    ]


@pytest.fixture
def tiny_cfg(tiny_overrides, tmp_path):
    """A composed `experiment=demo` config on the tiny assets, quick to run, in tmp dirs."""

    def make(*overrides, output="run"):
        return compose([*tiny_overrides, *overrides], output_dir=str(tmp_path / output))

    return make
