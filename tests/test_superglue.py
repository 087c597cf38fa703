"""SuperGLUE classification tasks: schemas, formatting, dict idx, diagnostics, end to end.

Fixtures in `tests/fixtures/super_glue/` have HF's `super_glue` schemas (see make_fixtures.py);
cb and RTE run on the real files in `shared/data/super_glue/` when they are there.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from sead import card, data, metrics, pipeline, report, teachers, toy
from sead.tasks import TASKS, check_trainable, get_task
from tests.helpers import compose, settings

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "super_glue"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "super_glue"

# HF `super_glue` features, in order (datasets' super_glue.py), for the tasks sead owns here.
HF_SCHEMAS = {
    "boolq": ["question", "passage", "idx", "label"],
    "wic": ["word", "sentence1", "sentence2", "start1", "start2", "end1", "end2", "idx", "label"],
    "wsc": ["text", "span1_index", "span2_index", "span1_text", "span2_text", "idx", "label"],
    "multirc": ["paragraph", "question", "answer", "idx", "label"],
    "axb": ["sentence1", "sentence2", "idx", "label"],
    "axg": ["premise", "hypothesis", "idx", "label"],
}
SPLITS = {"axb": ["test"], "axg": ["test"]}


def _load(task: str, splits=("train", "validation"), **cfg):
    return data.load_splits(
        get_task(task), settings("data", dir=str(FIXTURES / task), **cfg), splits
    )


def _one(task: str, **row) -> dict:
    """Formatted (first, second) of one row."""
    first, second = data.format_inputs(get_task(task), {k: [v] for k, v in row.items()})
    return first[0], second[0] if second else None


# --- registry and data ----------------------------------------------------------------------


def test_superglue_tasks_are_registered_with_their_hub_configs():
    superglue = {name for name, t in TASKS.items() if t.benchmark == "super_glue"}
    assert superglue >= {"boolq", "cb", "superglue_rte", "wic", "wsc", "multirc", "axb", "axg"}
    # GLUE's rte keeps its name and fields; SuperGLUE's is the same data under another schema.
    assert (get_task("rte").benchmark, get_task("rte").text_fields) == (
        "glue",
        ("sentence1", "sentence2"),
    )
    assert get_task("superglue_rte").hub_name == "rte"
    assert get_task("wsc").hub_name == "wsc.fixed"
    assert get_task("boolq").hub_name == "boolq"
    assert get_task("cb").labels == ("entailment", "contradiction", "neutral")


@pytest.mark.parametrize("task", sorted(HF_SCHEMAS))
def test_fixtures_have_the_hf_schema_and_load(task):
    splits = SPLITS.get(task, ["train", "validation"])
    for split in splits:
        rows = [json.loads(line) for line in (FIXTURES / task / f"{split}.jsonl").open()]
        assert all(list(row) == HF_SCHEMAS[task] for row in rows)
        assert {row["label"] for row in rows} <= {0, 1}
    loaded = _load(task, splits)
    assert all(len(ds) > 10 for ds in loaded.values())


def test_multirc_dict_idx_identifies_rows_by_answer():
    validation = _load("multirc")["validation"]
    assert validation[0]["idx"] == {"paragraph": 0, "question": 0, "answer": 0}
    ids = data.example_ids(validation, get_task("multirc"))
    assert ids.dtype == np.int64 and ids.tolist() == list(range(len(validation)))


def test_subsampling_keeps_whole_multirc_questions_and_axg_pairs():
    validation = _load("multirc", ["validation"], max_eval_samples=8)["validation"]
    questions = [i["question"] for i in validation["idx"][:]]
    full = _load("multirc", ["validation"])["validation"]
    sizes = {q: [i["question"] for i in full["idx"][:]].count(q) for q in set(questions)}
    assert 0 < len(validation) <= 8
    assert all(questions.count(q) == n for q, n in sizes.items())  # every answer of each
    again = _load("multirc", ["validation"], max_eval_samples=8)["validation"]
    assert again["idx"][:] == validation["idx"][:]  # the same subset every time
    pairs = _load("axg", ["test"], max_eval_samples=7)["test"]["idx"][:]
    assert len(pairs) == 6
    assert all(i // 2 == j // 2 for i, j in zip(pairs[::2], pairs[1::2], strict=True))


def test_bad_idx_is_named_with_task_split_and_file(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "multirc" / "validation.jsonl").open()]
    rows[3]["idx"]["answer"] = 0
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    multirc = get_task("multirc")
    with pytest.raises(ValueError, match=r"'multirc', split 'validation' \(.*validation.jsonl\)"):
        data.load_splits(multirc, settings("data", dir=str(tmp_path)), ["validation"])
    with pytest.raises(ValueError, match=r"idx.answer repeats the value\(s\) \[0\]"):
        data.load_splits(multirc, settings("data", dir=str(tmp_path)), ["validation"])
    for row in rows:  # no idx at all: only the file can give multirc's dict ids
        row.pop("idx")
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"has no field 'idx': expected a dict with key 'answer'"):
        data.load_splits(multirc, settings("data", dir=str(tmp_path)), ["validation"])
    # A task with integer ids given dict ids is told so.
    ds = Dataset.from_list([{"question": "q", "passage": "p", "idx": {"a": 1}, "label": 0}])
    with pytest.raises(ValueError, match="'boolq' expects an integer idx"):
        data.example_ids(ds, get_task("boolq"))


def test_missing_superglue_field_and_bad_label_name_the_file(tmp_path):
    row = {"word": "bank", "sentence1": "a bank", "sentence2": "the bank", "start1": 2,
           "start2": 4, "end1": 6, "idx": 0, "label": 1}  # fmt: skip
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(
        ValueError, match=r"'wic', split 'train' \(.*train.jsonl\) has no field 'end2'"
    ):
        data.load_splits(get_task("wic"), settings("data", dir=str(tmp_path)), ["train"])
    (tmp_path / "train.jsonl").write_text(json.dumps({**row, "end2": 8, "label": 2}) + "\n")
    with pytest.raises(ValueError, match=r"label value\(s\) \[2\].*'False', 1: 'True'"):
        data.load_splits(get_task("wic"), settings("data", dir=str(tmp_path)), ["train"])


# --- formatting -----------------------------------------------------------------------------


def test_wic_marks_the_target_word_in_both_sentences_and_prefixes_it():
    first, second = _one(
        "wic", word="run", sentence1="They run a shop.", sentence2="I ran home.", start1=5,
        end1=8, start2=2, end2=5, idx=0,
    )  # fmt: skip
    assert (first, second) == ("run: They *run* a shop.", "I *ran* home.")


def test_wic_span_outside_the_sentence_is_an_error_naming_the_row_and_file(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "wic" / "validation.jsonl").open()]
    rows[2]["end2"] = 99
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"validation.jsonl\): row idx 2: start2/end2=\d+/99"):
        data.load_splits(get_task("wic"), settings("data", dir=str(tmp_path)), ["validation"])


def test_wsc_marks_both_spans_keeping_punctuation_outside():
    text = '"Mark told Pete many lies about himself, which Pete included in his book."'
    # span1 "Pete" at word 2; span2 "his" at word 11. A span may end in punctuation: "himself,".
    first, second = _one(
        "wsc", text=text, span1_index=2, span1_text="Pete", span2_index=11, span2_text="his",
        idx=0,
    )  # fmt: skip
    assert second is None
    assert first == '"Mark told *Pete* many lies about himself, which Pete included in #his# book."'
    first, _ = _one(
        "wsc", text=text, span1_index=0, span1_text="Mark", span2_index=6, span2_text="himself",
        idx=0,
    )  # fmt: skip
    assert first == '"*Mark* told Pete many lies about #himself#, which Pete included in his book."'
    # Multi-word span, matched ignoring case.
    first, _ = _one(
        "wsc", text="The city councilmen refused the demonstrators a permit because they feared "
        "violence.", span1_index=0, span1_text="the city councilmen", span2_index=9,
        span2_text="they", idx=0,
    )  # fmt: skip
    assert first.startswith("*The city councilmen* refused") and "#they# feared" in first


def _wsc(issues=None, **row):
    batch = {k: [v] for k, v in {"idx": 5, **row}.items()}
    return data.FORMATTERS["wsc"](batch, issues)[0][0]


def test_wsc_spans_off_their_index_are_marked_where_they_are_and_reported():
    # Real WSC (even HF's wsc.fixed) has spans whose index is off, or whose words have
    # intervening text ("Kamenev and Zinoviev"): marked nearest the index, never dropped.
    issues = []
    text = "Mark told Pete a lie and Pete believed him."
    marked = _wsc(issues, text=text, span1_index=1, span1_text="Pete", span2_index=8,
                  span2_text="him")  # fmt: skip
    assert marked == "Mark told *Pete* a lie and Pete believed #him#."  # word 2, nearest 1
    assert issues == ["idx 5: span1_text 'Pete' is not at word 1, found at word 2"]
    issues.clear()
    marked = _wsc(issues, text=text, span1_index=0, span1_text="Mark and Pete", span2_index=8,
                  span2_text="him")  # fmt: skip
    assert marked.startswith("*Mark told Pete* a lie")  # not in the text: at its index
    assert "not in the text; marked 'Mark told Pete' at its index" in issues[0]
    # a clitic on the indexed word is still that word: not moved to another "it" or "Charlie"
    issues.clear()
    clitic = "It was raining, and Charlie said it's too wet for Charlie's dog."
    marked = _wsc(issues, text=clitic, span1_index=10, span1_text="Charlie", span2_index=6,
                  span2_text="it")  # fmt: skip
    assert marked == "It was raining, and Charlie said #it's# too wet for *Charlie's* dog."
    assert issues == []
    with pytest.raises(ValueError, match=r"row idx 5: span2_index=12 .* 9-word text"):
        _wsc(text=text, span1_index=0, span1_text="Mark", span2_index=12, span2_text="him")
    with pytest.raises(ValueError, match="overlap"):
        _wsc(text=text, span1_index=0, span1_text="Mark told", span2_index=1, span2_text="told")


def test_wsc_repairs_are_logged_once_when_the_split_is_loaded(tmp_path, caplog):
    rows = [json.loads(line) for line in (FIXTURES / "wsc" / "validation.jsonl").open()]
    rows[3]["span2_index"] = 8  # "because" -> "it" is word 9
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level("WARNING", logger="sead.data"):
        data.load_splits(get_task("wsc"), settings("data", dir=str(tmp_path)), ["validation"])
    assert "1 span(s) are not where their index says" in caplog.text
    assert "idx 3: span2_text 'it' is not at word 8, found at word 9" in caplog.text


def test_multirc_is_one_pair_per_answer_with_the_question_first():
    first, second = _one("multirc", paragraph="P.", question="Who?", answer="Ann", idx={})
    assert (first, second) == ("Who? Ann", "P.")
    # the Hub's HTML sentence markup is stripped: passage text, not tags, fills max_length
    marked = "<b>Sent 1: </b>Carla moved.<br><b>Sent 2: </b>She stayed.<br>"
    _, second = _one("multirc", paragraph=marked, question="Who?", answer="Ann", idx={})
    assert second == "Carla moved. She stayed."


def test_a_question_longer_than_max_length_is_named_not_a_tokenizer_panic(tmp_path):
    ds = _load("multirc", ["validation"])["validation"]
    tokenizer = _tokenizer("wordpiece", tmp_path, ds, get_task("multirc"))
    with pytest.raises(ValueError, match=r"keeps its first text whole .* max_length=4: raise"):
        data.tokenize(ds, tokenizer, get_task("multirc"), max_length=4)


@pytest.mark.parametrize("task", ["boolq", "multirc"])
@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_long_passages_are_cut_never_the_question(task, kind, tmp_path):
    """truncation=only_second: with a short max_length, the first segment survives whole."""
    ds = _load(task, ["validation"])["validation"]
    tokenizer = _tokenizer(kind, tmp_path, ds, get_task(task))
    encoded = data.tokenize(ds, tokenizer, get_task(task), max_length=24)
    first, _ = data.format_inputs(get_task(task), ds[:])
    for ids, question in zip(encoded["input_ids"][:], first, strict=True):
        assert len(ids) <= 24
        alone = tokenizer(question, add_special_tokens=False)["input_ids"]
        assert _contains(ids, alone), tokenizer.decode(ids)


def _contains(ids: list, part: list) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def _tokenizer(kind, tmp_path, ds, task):
    """A toy tokenizer (BERT WordPiece or RoBERTa byte-level BPE) that knows the split's words,
    as a real vocabulary would, and the markers' characters, as BERT's and RoBERTa's do."""
    from transformers import AutoTokenizer

    raw = [str(v) for field in task.text_fields for v in ds[field][:]]
    corpus = [*toy.toy_sentences(200), *raw, f"{data.TARGET_MARK} {data.PRONOUN_MARK} : ?"]
    return AutoTokenizer.from_pretrained(toy.build_tokenizer(kind, tmp_path / kind, corpus))


@pytest.mark.parametrize("task", ["wic", "wsc"])
@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_span_markers_survive_wordpiece_and_bpe(task, kind, tmp_path):
    ds = _load(task, ["validation"])["validation"]
    spec = get_task(task)
    tokenizer = _tokenizer(kind, tmp_path, ds, spec)
    encoded = data.tokenize(ds, tokenizer, spec, max_length=128)
    first, second = data.format_inputs(spec, ds[:])
    for i, ids in enumerate(encoded["input_ids"][:]):
        assert tokenizer.unk_token_id not in ids
        text = "".join(tokenizer.decode(ids, skip_special_tokens=True).split())
        # Both marked spans, whole, with their markers: e.g. "*bank*" twice, or "*the box*"
        # and "#it#".
        marked = _marked_words(first[i] + " " + (second[i] if second else ""))
        assert len(marked) == 2 and all(m.lower() in text.lower() for m in marked), (text, marked)


def _marked_words(text: str) -> list[str]:
    import re

    return re.findall(r"\*[^*]+\*|#[^#]+#", "".join(text.split()))


def test_fingerprint_covers_the_formatting_and_keeps_glue_hashes(monkeypatch):
    sst2 = Dataset.from_list([{"sentence": "a", "idx": 0, "label": 1}])
    assert data.input_fingerprint(sst2, get_task("sst2"), ["label"]) == data.content_fingerprint(
        sst2, ["sentence", "label"]
    )
    wic = _load("wic", ["validation"])["validation"]
    task = get_task("wic")
    before = data.input_fingerprint(wic, task)
    monkeypatch.setattr(data, "TARGET_MARK", "[T]")  # a formatting change...
    assert data.input_fingerprint(wic, task) != before  # ...is a new cache key
    monkeypatch.undo()
    assert data.input_fingerprint(wic, task) == before
    moved = wic.map(lambda row: {"start1": row["start1"] + (row["idx"] == 0)})
    assert data.input_fingerprint(moved, task) != before  # and so is a moved span


# --- configuration and checks before work ---------------------------------------------------


def test_diagnostics_are_evaluation_only_and_belong_to_rte():
    with pytest.raises(ValueError, match="'axb' is a SuperGLUE diagnostic set.*data.diagnostics"):
        check_trainable(get_task("axb"))
    cfg = {"diagnostics": ["axb"], "diagnostics_dir": str(FIXTURES)}
    with pytest.raises(ValueError, match=r"'axb'.*models of \['rte', 'superglue_rte'\].*'cb'"):
        data.load_diagnostics(get_task("cb"), settings("data", **cfg))
    with pytest.raises(ValueError, match="'boolq'.*not a diagnostic set"):
        data.load_diagnostics(get_task("superglue_rte"), settings("data", diagnostics=["boolq"]))
    loaded = data.load_diagnostics(
        get_task("rte"), settings("data", **{**cfg, "diagnostics": ["axb", "axg"]})
    )
    assert {name: len(ds) for name, ds in loaded.items()} == {"axb": 24, "axg": 24}
    axg = settings("data", **{**cfg, "diagnostics": "axg"})  # data.diagnostics=axg: one set
    assert list(data.load_diagnostics(get_task("rte"), axg)) == ["axg"]


def test_superglue_teacher_without_checkpoint_points_to_finetuning():
    cfg = compose(["teachers=[bert]"]).teachers  # checkpoints for GLUE tasks and RTE only
    with pytest.raises(ValueError, match="no public super_glue checkpoint.*finetune=true"):
        teachers.teacher_specs(cfg, get_task("wic"))
    # SuperGLUE's RTE is GLUE's RTE data: the configured RTE checkpoints apply.
    composed = compose(["task=superglue_rte", "teachers=[bert,roberta]"])
    specs = teachers.teacher_specs(composed.teachers, get_task("superglue_rte"))
    assert [s.source for s in specs] == [
        "JeremiahZ/bert-base-uncased-rte",
        "JeremiahZ/roberta-base-rte",
    ]


@pytest.mark.parametrize(
    "task, gold, baseline",
    [
        ("cb", [0, 0, 1, 2], 0.5),  # accuracy of always "entailment"
        ("boolq", [1, 1, 0], 2 / 3),
        ("multirc", [0, 0, 1], 0.5),  # f1_a of always True (always False scores 0)
    ],
)
def test_constant_baseline_for_the_gate(task, gold, baseline):
    assert teachers.constant_baseline(get_task(task), np.array(gold)) == pytest.approx(baseline)


# --- end to end on tiny models --------------------------------------------------------------


def _e2e(tiny_cfg, task, data_dir, *overrides, output="run"):
    cfg = tiny_cfg(
        f"task={task}",
        f"data.dir={data_dir}",
        "data.max_train_samples=40",
        "data.max_eval_samples=24",
        "teachers.toy_bert.max_length=96",
        "teachers.toy_roberta.max_length=96",
        "student.max_length=96",
        *overrides,
        output=output,
    )
    results = pipeline.run(cfg)
    spec = get_task(task)
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert saved["task"] == task and saved["benchmark"] == "super_glue"
    for model in [*results["teachers"].values(), results["student"]]:
        assert set(model["metrics"]["validation"]) == set(spec.metrics)
    assert spec.main_metric in results["ensemble"]["metrics"]["validation"]
    return results


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, student",
    [
        ("boolq", "student"),
        ("wic", "teacher_roberta"),  # a BPE student on the span task
        ("wsc", "student"),
        ("multirc", "teacher_roberta"),
    ],
)
def test_fixture_tasks_end_to_end(tiny_cfg, tiny_assets, task, student):
    """Teachers with WordPiece (BERT) and BPE (RoBERTa) tokenizers, and either kind of student."""
    _e2e(tiny_cfg, task, FIXTURES / task, f"student.model={tiny_assets}/models/{student}")
    model_card = (
        Path(tiny_cfg(output="run").paths.output_dir) / "student" / "README.md"
    ).read_text()
    assert card._example(get_task(task)) in model_card  # how to format its input, shown


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "cb").is_dir(), reason=f"real SuperGLUE data not at {SHARED}")
def test_cb_end_to_end_on_real_rows(tiny_cfg):
    results = _e2e(tiny_cfg, "cb", SHARED / "cb")
    assert results["n_examples"] == {"train": 40, "validation": 24}
    assert 0 <= results["student"]["metrics"]["validation"]["f1"] <= 1


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "rte").is_dir(), reason=f"real SuperGLUE data not at {SHARED}")
def test_superglue_rte_end_to_end_with_diagnostics(tiny_cfg):
    results = _e2e(
        tiny_cfg,
        "superglue_rte",
        SHARED / "rte",
        "data.diagnostics=[axb,axg]",
        f"data.diagnostics_dir={FIXTURES}",
    )
    diagnostics = results["student"]["diagnostics"]
    assert set(diagnostics) == {"axb", "axg"}
    assert set(diagnostics["axb"]) == {"matthews_correlation"}
    assert set(diagnostics["axg"]) == {"accuracy", "gender_parity"}
    run_dir = Path(tiny_cfg(output="run").paths.output_dir)
    assert "student on diagnostic axb: matthews_correlation=" in report.summary_table(results)
    (row,) = report.job_rows([run_dir / "results.json"])
    assert row["student axg"] == diagnostics["axg"]["accuracy"]
    # The same student, scored again from its saved weights: the diagnostics are its own.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sead.inference import predict_logits

    student_dir = run_dir / "student"
    model = AutoModelForSequenceClassification.from_pretrained(student_dir)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    axg = Dataset.from_json(str(FIXTURES / "axg" / "test.jsonl"))
    encoded = data.tokenize(axg, tokenizer, get_task("axg"), 96)
    predictions = predict_logits(model, tokenizer, encoded).argmax(-1)
    assert metrics.score_split("axg", axg, predictions) == pytest.approx(diagnostics["axg"])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_reports_exactly_its_registered_metrics(name):
    task = get_task(name)
    if name not in metrics.CONFIGS:
        pytest.skip(f"{name}: metric added with its own task kind")
    groups = [0, 0, 1, 1] if name in metrics.GROUP_KEYS else None
    labels = [0.5, 1.0, 2.0, 4.0] if task.is_regression else [0, 1, 1, 0]
    gold = labels
    if name == "record":  # references: the per-candidate (f1, em) credit table
        gold = np.repeat(np.eye(2)[labels][..., None], 2, axis=-1)
    result = metrics.compute(name, [0.1, 1.2, 2.5, 3.0] if task.is_regression else [0, 1, 0, 0],
                             gold, groups=groups)  # fmt: skip
    assert set(result) == set(task.metrics)
    assert task.main_metric in metrics.compute(name, labels, gold)  # no groups: still the main one


def test_multirc_ensembler_scores_f1_a_and_refuses_grouped_metrics():
    from sead import ensemble

    multirc = get_task("multirc")
    with pytest.raises(ValueError, match="'exact_match' scores groups.*'f1_a'"):
        ensemble.build({"name": "metric_weighted", "metric": "exact_match"}, multirc, ["a", "b"])
    logits = np.log(np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.4, 0.6]]]))
    fitted = ensemble.build({"name": "metric_weighted"}, multirc, ["a", "b"]).fit(
        logits, np.array([0, 1])
    )
    scores, _ = ensemble.score(multirc, fitted.combine(logits), np.array([0, 1]))
    assert scores == {"f1_a": 1.0}
