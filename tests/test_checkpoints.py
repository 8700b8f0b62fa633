"""Checkpoint names, discovery on disk, and hub revision lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.checkpoints import Checkpoint, discover_checkpoints, parse_revisions, parse_step
from harness.errors import UserError
from harness.pythia import PYTHIA_REVISIONS


@pytest.mark.parametrize(
    "name, step",
    [
        ("step33000", 33000), ("step-500", 500), ("step_7", 7), ("checkpoint-1200", 1200), ("global_step90", 90),
        ("iter_0001000", 1000), ("runs/x/checkpoint-500/", 500), ("main", None), ("final", None),
        ("mystep12", None), ("checkpoint-12-old", None), (None, None),
    ],
)
def test_parse_step(name, step):
    assert parse_step(name) == step


def _checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_discovery_finds_every_naming_scheme_in_step_order_and_notes_the_rest(tmp_path):
    run = tmp_path / "run"
    for name in ["checkpoint-300", "step-20", "step100", "global_step5", "iter_0000040", "checkpoint-1000"]:
        _checkpoint(run / name)
    (run / "runs").mkdir()  # TensorBoard logs
    (run / "checkpoint-2000").mkdir()  # being written: no config.json yet
    (run / "trainer_state.json").write_text("{}")  # files are not folders to note
    found = discover_checkpoints([run])
    assert [c.step for c in found.checkpoints] == [5, 20, 40, 100, 300, 1000]
    assert [Path(c.model).name for c in found.checkpoints] == [
        "global_step5", "step-20", "iter_0000040", "step100", "checkpoint-300", "checkpoint-1000",
    ]
    assert all(c.revision is None for c in found.checkpoints)
    assert len(found.notes) == 2
    assert any("runs" in n and "not a checkpoint name" in n for n in found.notes)
    assert any("checkpoint-2000" in n and "no config.json" in n for n in found.notes)


def test_a_folder_that_is_itself_a_checkpoint(tmp_path):
    final = _checkpoint(tmp_path / "run" / "final")
    one = _checkpoint(tmp_path / "run2" / "step-70")
    found = discover_checkpoints([final, one])
    assert found.checkpoints == (Checkpoint(str(one), None, 70), Checkpoint(str(final), None, None))


def test_no_checkpoints_is_a_user_error_naming_what_was_seen(tmp_path):
    (tmp_path / "logs").mkdir()
    with pytest.raises(UserError, match="no checkpoints found.*logs"):
        discover_checkpoints([tmp_path])
    with pytest.raises(UserError, match="does not exist"):
        discover_checkpoints([tmp_path / "missing"])


def test_pythia_preset_has_the_154_published_steps():
    revisions = parse_revisions("pythia")
    assert revisions == PYTHIA_REVISIONS
    assert len(revisions) == 154
    assert revisions[:12] == tuple(f"step{s}" for s in [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000])
    assert revisions[-2:] == ("step142000", "step143000")


def test_revision_ranges_include_the_stop_and_lists_are_ordered_by_step():
    assert parse_revisions("step1000:5000:2000") == ("step1000", "step3000", "step5000")
    assert parse_revisions("step1000:step3000:1000") == ("step1000", "step2000", "step3000")
    assert len(parse_revisions("step1000:143000:1000")) == 143
    assert parse_revisions("step2000,step100,main,step100") == ("step100", "step2000", "main")
    assert parse_revisions("step0,step1000:2000:1000") == ("step0", "step1000", "step2000")


@pytest.mark.parametrize("spec", ["step5000:1000:1000", "step1:10", "step1:10:0", ","])
def test_bad_revision_specs_are_user_errors(spec):
    with pytest.raises(UserError):
        parse_revisions(spec)
