"""Unit keys, shards, the unit files on disk and the sweep config — without a model."""

from __future__ import annotations

import dataclasses
import json

import pytest

from harness import store
from harness.checkpoints import Checkpoint
from harness.errors import UserError
from harness.items import registry
from harness.requests import GenerationResult, Item, LoglikelihoodResult
from harness.runs.sweep_config import load_sweep_config, parse_tokens_per_step
from harness.runs.units import (
    SCORING_VERSION,
    CheckpointIdentity,
    LossUnitRecord,
    TaskUnitRecord,
    items_sha256,
    parse_shard,
    plan_id,
    record_json,
    scoring_spec,
    unit_key,
)
from harness.scoring import companions
from harness.scoring import records as scoring
from harness.spec import BuildOptions, TaskSpec

from conftest import FIXTURES

IDENTITY = CheckpointIdentity(None, None, "ab" * 32, "float32")


SPEC = TaskSpec(
    name="mmlu", family="choice_exam", description="", output_type="multiple_choice", prompt_type="fewshot",
    num_fewshot=5, split="test", fewshot_split="dev", metrics=("acc", "acc_norm"), primary_metric="acc", prompt="mmlu",
    has_subtasks=True,
)


def _task_record(**changes) -> TaskUnitRecord:
    spec = SPEC
    record = TaskUnitRecord(
        checkpoint=IDENTITY, task="mmlu:abstract_algebra", spec=spec, limit=4, bigbench_mode="auto",
        data_source="local", items_sha256="cd" * 32, add_bos_token=None,
    )
    return dataclasses.replace(record, **changes)


def test_key_is_stable_across_processes_and_versions():
    # A changed key re-runs every finished unit of every sweep: this golden value may change only
    # on purpose (a new record field, or SCORING_VERSION bumped because scores changed).
    record = record_json(_task_record())
    assert record["scoring_version"] == SCORING_VERSION == 4
    assert record["spec"]["num_fewshot"] == 5 and record["spec"]["prompt_type"] == "fewshot"
    # changed on purpose when TaskSpec gained its scoring names (extractor, scorer, gold_continuation)
    assert unit_key(_task_record()) == "574d2952dbf49b07bb840e67"


def test_rewording_a_task_description_keeps_the_key():
    spec = registry.resolve(["mmlu:abstract_algebra"])[0].spec
    reworded = dataclasses.replace(spec, description=spec.description + " (reworded)")
    assert unit_key(_task_record(spec=scoring_spec(reworded))) == unit_key(_task_record(spec=scoring_spec(spec)))


@pytest.mark.parametrize(
    "change",
    [
        {"checkpoint": CheckpointIdentity(None, None, "ef" * 32, "float32")},
        {"checkpoint": dataclasses.replace(IDENTITY, dtype="bfloat16")},
        {"limit": 5},
        {"items_sha256": "00" * 32},
        {"add_bos_token": True},
        {"data_source": "hub"},
        {"scoring_version": SCORING_VERSION + 1},
    ],
)
def test_every_input_of_the_numbers_changes_the_key(change):
    assert unit_key(_task_record(**change)) != unit_key(_task_record())


# One item of each shape, with every field scoring reads set (a generative BIG-bench-like item and a
# multiple-choice one with choice texts).
GENERATIVE_ITEM = Item(
    task="t", doc_id=0, context="Q: 1 + 1\nA: ", targets=("2",), stop=("\n",), max_new_tokens=8,
    solution="1 + 1 = 2\n#### 2", stop_string="\n", output_regex=r"\d+", metrics=("exact_match", "bleu"),
    primary_metric="exact_match", meta={"fewshot_doc_ids": [3, 4], "mode": "gen"},
)
CHOICE_ITEM = Item(
    task="t", doc_id=0, context="Q: sky?", choices=(" blue", " green"), gold=0, choice_texts=("blue", "green"),
    meta={"subject": "colours"},
)
# Each scored field of an item changed alone (the item it belongs to, the field, a new value).
SCORED_FIELD_CHANGES = [
    (CHOICE_ITEM, "context", "Q: grass?"),
    (CHOICE_ITEM, "choices", (" blue", " red")),
    (CHOICE_ITEM, "gold", 1),
    (CHOICE_ITEM, "choice_texts", ("blue ", "green")),  # acc_norm/acc_bytes lengths
    (CHOICE_ITEM, "doc_id", 1),
    (CHOICE_ITEM, "task", "u"),
    (dataclasses.replace(CHOICE_ITEM, contexts=("a", "b"), context="a\n\nb"), "contexts", ("a", "c"), {"context": "a\n\nc"}),
    (GENERATIVE_ITEM, "targets", ("2", "two")),
    (GENERATIVE_ITEM, "stop", ("\n\n",)),
    (GENERATIVE_ITEM, "max_new_tokens", 16),
    (GENERATIVE_ITEM, "solution", "1 + 1 is 2\n#### 2"),  # the gold continuation of the companions
    (GENERATIVE_ITEM, "stop_string", "."),  # the answer extraction rule
    (GENERATIVE_ITEM, "output_regex", r"[-+]?\d+"),
    (GENERATIVE_ITEM, "metrics", ("exact_match",)),  # the metric list (a task.json edit)
    (dataclasses.replace(GENERATIVE_ITEM, metrics=("exact_match", "numeric_match")), "primary_metric", "numeric_match"),
]


def _key_of(item: Item) -> str:
    return unit_key(_task_record(items_sha256=items_sha256({"t": [item]})))


@pytest.mark.parametrize("change", SCORED_FIELD_CHANGES, ids=[c[1] for c in SCORED_FIELD_CHANGES])
def test_every_field_scoring_reads_changes_the_key(change):
    item, name, value, *derived = change  # derived: fields that must move with it (contexts' display form)
    assert getattr(item, name) != value
    assert _key_of(dataclasses.replace(item, **{name: value}, **(derived[0] if derived else {}))) != _key_of(item)


def test_every_item_field_but_meta_is_covered_by_a_key_test():
    # a field added to Item is scored data until shown otherwise: it must join SCORED_FIELD_CHANGES
    assert {f.name for f in dataclasses.fields(Item)} - {"meta"} == {change[1] for change in SCORED_FIELD_CHANGES}


def test_fields_scoring_does_not_read_leave_the_key_alone():
    for item in (GENERATIVE_ITEM, CHOICE_ITEM):
        assert _key_of(dataclasses.replace(item, meta={"fewshot_doc_ids": [9], "subject": "other", "mode": "x"})) == _key_of(item)
        assert _key_of(dataclasses.replace(item, meta={})) == _key_of(item)


class _UnreadableMeta(dict):
    """A ``meta`` that fails any read: proves scoring takes nothing from it."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("scoring read Item.meta; make what it needs a typed Item field")

    __getitem__ = get = __contains__ = keys = items = values = __iter__ = _refuse


# one task per scorer named in tasks/*.yaml
GENERATIVE_SPECS = {s.scorer: s for s in reversed(list(registry.all_specs().values())) if s.scorer}


@pytest.mark.parametrize("scorer", sorted(GENERATIVE_SPECS))
def test_scoring_reads_nothing_from_meta(scorer):
    spec = GENERATIVE_SPECS[scorer]
    item = dataclasses.replace(GENERATIVE_ITEM, targets=("2",), solution="1 + 1 = 2\n#### 2", meta=_UnreadableMeta())
    row = scoring.row_metrics(spec, [item])[0]
    gold = companions.gold_continuation(spec, item)
    results = tuple(LoglikelihoodResult(-1.0, 2, 2, False) for _ in gold.score_requests())
    record = scoring.score_generation(spec, item, GenerationResult("2\n", results), row, tokenize=list)
    assert "target_logprob" in record["metrics"]
    choice = dataclasses.replace(CHOICE_ITEM, meta=_UnreadableMeta())
    scores = scoring.score_multiple_choice(choice, [LoglikelihoodResult(-4.0, 1, 5, False), LoglikelihoodResult(-4.9, 1, 6, False)])
    # by the choice texts -4.9/5 ("green") beats -4.0/4 ("blue"); by the scored strings " blue" would win
    assert scores["metrics"]["acc_norm"] == 0.0


def test_shots_prompt_type_and_max_tokens_are_in_the_key():
    zero = registry.with_overrides(SPEC, BuildOptions(num_fewshot=0))
    assert zero.num_fewshot == 0 and zero.prompt_type == "zeroshot"
    # and back: shots asked of a zero-shot task make it a few-shot one in the record
    three = registry.with_overrides(zero, BuildOptions(num_fewshot=3))
    assert three.num_fewshot == 3 and three.prompt_type == "fewshot"
    assert unit_key(_task_record(spec=zero)) != unit_key(_task_record())
    assert unit_key(_task_record(spec=dataclasses.replace(SPEC, max_new_tokens=64))) != unit_key(_task_record())
    assert unit_key(_task_record(spec=dataclasses.replace(SPEC, options={"sampler": "random"}))) != unit_key(_task_record())


# The scoring names of a generative task, each changed alone: how its answer is read, scored and
# what its companions score as gold.  A spec field that scoring reads must be hashed into the key.
GENERATIVE_SPEC = dataclasses.replace(
    SPEC, name="gsm8k", family="gsm8k", output_type="generate", metrics=("exact_match_strict",),
    primary_metric="exact_match_strict", extractor="gsm8k_cot_strict", scorer="gsm8k_exact_match",
    gold_continuation="gsm8k_cot_solution",
)
SCORING_NAME_CHANGES = [
    ("extractor", "gsm8k_hash_strict"),
    ("scorer", "nlpcc_kbqa_exact_match"),
    ("gold_continuation", "gsm8k_worked_solution"),
]


@pytest.mark.parametrize("change", SCORING_NAME_CHANGES, ids=[c[0] for c in SCORING_NAME_CHANGES])
def test_every_scoring_name_of_the_spec_changes_the_key(change):
    name, value = change
    base = _task_record(spec=scoring_spec(GENERATIVE_SPEC))
    changed = _task_record(spec=scoring_spec(dataclasses.replace(GENERATIVE_SPEC, **{name: value})))
    assert record_json(changed)["spec"][name] == value
    assert unit_key(changed) != unit_key(base)


def test_every_scoring_name_of_the_spec_is_covered_by_a_key_test():
    # a scoring name added to TaskSpec must join SCORING_NAME_CHANGES
    names = {"extractor", "scorer", "gold_continuation"}
    assert names <= {f.name for f in dataclasses.fields(TaskSpec)}
    assert names == {change[0] for change in SCORING_NAME_CHANGES}


def test_loss_keys_follow_their_settings():
    base = LossUnitRecord(checkpoint=IDENTITY, step=10, source="corpus", input_sha256="1" * 64, window=64, tokens=400)
    assert unit_key(base) != unit_key(dataclasses.replace(base, window=128))
    assert unit_key(base) != unit_key(dataclasses.replace(base, input_sha256="2" * 64))
    # a logged loss too is keyed by the weights: other weights in the same folder, another key
    logged = dataclasses.replace(base, source="trainer-state", window=None, tokens=None)
    other_weights = dataclasses.replace(IDENTITY, content_hash="f" * 64)
    assert unit_key(logged) != unit_key(dataclasses.replace(logged, checkpoint=other_weights))
    # a task record and a loss record never share a key
    assert unit_key(base) != unit_key(_task_record())


def test_shards_cover_every_unit_exactly_once():
    checkpoints = [Checkpoint(f"run/checkpoint-{s}", None, s) for s in range(0, 3000, 100)]
    ids = [plan_id("m", c, t) for c in checkpoints for t in ("mmlu", "gsm8k", "loss")]
    owners = [[parse_shard(f"{i}/4").owns(pid) for i in range(4)] for pid in ids]
    assert all(sum(row) == 1 for row in owners)
    counts = [sum(row[i] for row in owners) for i in range(4)]
    assert all(c > 0 for c in counts) and sum(counts) == len(ids)
    assert parse_shard("0/1").owns(ids[0])


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "1/0"])
def test_bad_shards_are_user_errors(text):
    with pytest.raises(UserError):
        parse_shard(text)


def test_item_log_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "u.items.jsonl"
    store.append_jsonl(path, [{"doc_id": 0}, {"doc_id": 1}])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"doc_id": 2, "cho')  # a kill in the middle of a write
    assert store.read_partial_jsonl(path) == [{"doc_id": 0}, {"doc_id": 1}]
    assert store.read_partial_jsonl(tmp_path / "missing.jsonl") == []


def _unit(task, key, status, when, weights="a" * 64, **extra):
    unit = {"task": task, "key": key, "status": status, "kind": "task" if task != "loss" else "loss",
            "name": "m", "size": "s", "step": 10, "checkpoint": {"model": "m/checkpoint-10", "revision": None},
            "record": {"checkpoint": {"model": None, "resolved_revision": None, "content_hash": weights, "dtype": "float32"}}}
    if status == "done":
        unit.update(finished=when, items=f"{key}.items.jsonl", tasks={task: {"metrics": {}}}, stats={}, model={"model": "m"})
    else:
        unit.update(failed=when, error="boom")
    return {**unit, **extra}


def test_the_view_is_the_request_never_the_latest_unit(tmp_path):
    checkpoint_dir = tmp_path / "out" / "m" / "checkpoint-10"
    units = checkpoint_dir / "units"
    units.mkdir(parents=True)
    for name, unit in {
        "k1.json": _unit("mmlu", "k1", "done", "2026-01-01T00:00:00"),
        "k2.json": _unit("mmlu", "k2", "done", "2026-01-02T00:00:00"),  # a later run with other settings
        "failed-a.json": _unit("mmlu", "k4", "failed", "2026-01-03T00:00:00"),
        "failed-b.json": _unit("gsm8k", None, "failed", "2026-01-01T00:00:00"),
        "k3.json": {**_unit("loss", "k3", "done", "2026-01-01T00:00:00"), "loss": {"loss": 2.5, "source": "trainer-state"}},
        "k5.json": {**_unit("loss", "k5", "done", "2026-01-04T00:00:00", weights="b" * 64), "loss": {"loss": 9.0, "source": "corpus"}},
    }.items():
        (units / name).write_text(json.dumps(unit))
    # the request of the first settings: its own unit, though a later one of the same task exists
    view = store.merged_results(checkpoint_dir, {"mmlu": "k1", "gsm8k": "k9", "loss": "k3"})
    assert view["units"]["mmlu"] == {"key": "k1", "status": "done", "finished": "2026-01-01T00:00:00", "items": "units/k1.items.jsonl"}
    assert view["failures"] == [{"task": "gsm8k", "error": "boom", "failed": "2026-01-01T00:00:00"}]  # failed before keys
    assert view["loss"] == {"loss": 2.5, "source": "trainer-state"} and view["request"]["mmlu"] == "k1"
    # a request whose unit failed shows that failure, not another configuration's scores
    view = store.merged_results(checkpoint_dir, {"mmlu": "k4"})
    assert view["tasks"] == {} and view["failures"][0]["task"] == "mmlu"
    # no request recorded (no results.json): the latest weights' units only, never a join of two weights
    fallback = store.merged_results(checkpoint_dir)
    assert fallback["loss"] == {"loss": 9.0, "source": "corpus"} and fallback["tasks"] == {}
    # a results.json written by a run names the request the default view follows
    store.write_json_atomic(checkpoint_dir / store.RESULTS_NAME, {"request": {"mmlu": "k2"}})
    assert store.merged_results(checkpoint_dir)["units"]["mmlu"]["key"] == "k2"
    assert store.find_checkpoint_dirs(tmp_path / "out") == [checkpoint_dir]


def test_damaged_unit_files_and_item_lines_are_skipped_never_fatal(tmp_path):
    checkpoint_dir = tmp_path / "m" / "checkpoint-10"
    units = checkpoint_dir / "units"
    units.mkdir(parents=True)
    good = _unit("mmlu", "k1", "done", "2026-01-01T00:00:00")
    (units / "k1.json").write_text(json.dumps(good))
    (units / "k2.json").write_text(json.dumps(_unit("gsm8k", "k2", "done", "2026-01-01T00:00:00"))[:40])  # truncated
    (units / "k3.json").write_bytes(b"\xff\xfe not utf-8")
    (units / "k4.json").write_text("[1, 2]")  # valid JSON, not a unit
    files = store.read_unit_files(checkpoint_dir)
    assert [u["key"] for u in files.units] == ["k1"]
    assert sorted(p.name for p, _ in files.unreadable) == ["k2.json", "k3.json", "k4.json"]
    assert store.merged_results(checkpoint_dir, {"mmlu": "k1", "gsm8k": "k2"})["units"].keys() == {"mmlu"}
    from harness.runs.unit_files import is_finished

    warned = []
    assert is_finished(checkpoint_dir, "k1", warned.append) and not is_finished(checkpoint_dir, "k2", warned.append)
    assert len(warned) == 1 and "k2.json" in warned[0] and "runs again" in warned[0]

    log = tmp_path / "u.items.jsonl"
    log.write_text('{"doc_id": 0}\n{"doc_id": 1, "cho\n{"doc_id": 2}\n\n[3]\n{"doc_id": 4}\n{"doc_id": 5', encoding="utf-8")
    records, bad = store.read_item_log(log)
    # the bad line in the middle hides nothing after it; the torn last line is one more bad line
    assert [r["doc_id"] for r in records] == [0, 2, 4] and bad == 3


def test_sweep_config_file(tmp_path):
    runs = tmp_path / "runs" / "small"
    (runs / "checkpoint-10").mkdir(parents=True)
    (tmp_path / "val.jsonl").write_text('{"text": "x"}\n')
    config_path = tmp_path / "sweep.yaml"
    config_path.write_text(
        f"""
out: out/
tasks: mmlu:abstract_algebra, gsm8k
data_dir: {FIXTURES / 'data'}
limit: 4
batch_size: 2
tokens_per_step: pythia
loss: {{corpus: val.jsonl, window: 64, tokens: 400}}
models:
  - checkpoints: runs/small
    size: 70m
  - model: EleutherAI/pythia-160m
    revisions: step1000:3000:1000
    name: pythia-160m
    loss: {{from: {FIXTURES / 'sweep' / '160m-seed5_excerpt.tsv'}, smoothing: 5}}
    tokens_per_step: 1000
"""
    )
    config = load_sweep_config(config_path, limit=2, out=None)
    assert config.tasks == ("mmlu:abstract_algebra", "gsm8k")
    assert config.limit == 2  # a flag wins over the file
    assert config.out == tmp_path / "out" and config.batch_size == 2
    small, pythia = config.models
    assert small.checkpoint_paths == (tmp_path / "runs" / "small",) and small.size == "70m"
    assert small.name == "small"  # the run folder's name, however its path is spelled (as eval and the callback name it)
    assert small.loss.kind == "corpus" and small.loss.corpus == tmp_path / "val.jsonl" and small.loss.window == 64
    assert small.tokens_per_step == 2_097_152
    assert pythia.revisions == ("step1000", "step2000", "step3000") and pythia.hub_model == "EleutherAI/pythia-160m"
    assert pythia.loss.kind == "file" and pythia.loss.smoothing == 5 and pythia.tokens_per_step == 1000


def test_sweep_task_files_from_the_config_and_flags(tmp_path, monkeypatch):
    """ClozeT / GSM8K-Chinese data (no bundled copy) reach the sweep's build options both ways."""
    from harness import cli
    from harness.runs import sweep

    (tmp_path / "clozet.jsonl").write_text('{"context": "a", "choices": ["b", "c"], "label": 0}\n')
    config_path = tmp_path / "sweep.yaml"
    config_path.write_text("tasks: clozet\ntask_files: {clozet: clozet.jsonl, gsm8k_zh: someone/gsm8k-zh}\n"
                           "models: [{checkpoints: runs}]\n")
    config = load_sweep_config(config_path)
    assert config.task_files == (("clozet", str(tmp_path / "clozet.jsonl")), ("gsm8k_zh", "someone/gsm8k-zh"))
    assert config.build_options().task_files == config.task_files

    seen = []
    monkeypatch.setattr(sweep, "run_sweep", lambda config, log, loggers=None: seen.append(config) or (_ for _ in ()).throw(SystemExit(0)))
    monkeypatch.chdir(tmp_path)  # a local --task-file must exist (checked before the sweep starts)
    (tmp_path / "x.jsonl").write_text('{"context": "a", "choices": ["b", "c"], "label": 0}\n')
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--checkpoints", str(tmp_path), "--tasks", "clozet", "--task-file", "clozet=x.jsonl",
                  "--data-revision", "v1"])
    assert seen[0].build_options().task_files == (("clozet", "x.jsonl"),)
    assert seen[0].build_options().hub_revision == "v1"


@pytest.mark.parametrize(
    "body, message",
    [
        ("models: []", "lists no models"),
        ("modles: []", "unknown setting"),
        ("models: [{model: a/b, checkpoints: x}]", "not both"),
        ("models: [{checkpoints: x, revisions: pythia}]", "--revisions applies to a hub model"),
        ("models: [{model: a/b, colour: red}]", "unknown setting"),
        ("tasks: mmlu\nmodels: [{model: a/b}, {model: a/b}]", "share the name"),
        ("models: [{model: a/b}]\nloss: {from: trainer-state}", "trainer-state reads local"),
        ("models: [{model: a/b}]", "nothing to do"),
        ("tasks: mmlu\nmodels: [{model: a/b}]\nsave_every: 0", "save-every"),
        ("tasks: [mmlu\n", "not valid YAML"),
    ],
)
def test_config_errors_are_one_line_user_errors(tmp_path, body, message):
    path = tmp_path / "sweep.yaml"
    path.write_text(body)
    with pytest.raises(UserError, match=message) as info:
        load_sweep_config(path)
    assert "\n" not in str(info.value)


def test_tokens_per_step():
    assert parse_tokens_per_step("pythia") == 2_097_152
    assert parse_tokens_per_step("1_000") == 1000 and parse_tokens_per_step(None) is None
    with pytest.raises(UserError):
        parse_tokens_per_step("lots")
