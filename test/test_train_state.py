"""Crash-safe training checkpoints (issue 15 item 3) and one-line errors for bad training files (item 4).

A kill is simulated deterministically at every write boundary of ``Trainer.save_state``: each file system
operation of the commit (file writes, fsyncs, renames, links, unlinks) is counted, and the k-th raises before it
happens; temporary files are then truncated (a kill can land in the middle of a write too). Resume must give a
consistent pair, the previous step's before the commit point and the new one's after it.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from mtl3d_perception.cli import main as cli_main
from mtl3d_perception.model import save_checkpoint
from mtl3d_perception.model.checkpoint import CheckpointError
from mtl3d_perception.train import train_state
from mtl3d_perception.train.config import load_config
from mtl3d_perception.train.train_state import CheckpointPairError, find_committed, load_state_file
from mtl3d_perception.train.trainer import STATE_FORMAT, Trainer

SMOKE = Path(__file__).resolve().parents[1] / "config" / "train" / "smoke.yaml"


def smoke(out: Path, *overrides: str):
    return load_config(SMOKE, [f"out_dir={out}", "steps=3", *overrides])


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler in the code under test can swallow it."""


class KillSwitch:
    """Counts file-system boundaries of a save and raises :class:`Killed` before the ``kill_at``-th one."""

    OPS = ("replace", "link", "fsync", "unlink")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, kill_at: int | None) -> None:
        self.count, self.kill_at, self.ops = 0, kill_at, []
        for name in self.OPS:
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        import mtl3d_perception.train.trainer as trainer_module

        monkeypatch.setattr(trainer_module, "save_checkpoint", self._wrap("write weights", trainer_module.save_checkpoint))
        monkeypatch.setattr(trainer_module.torch, "save", self._wrap("write state", torch.save))

    def _wrap(self, name, fn):
        def wrapped(*args, **kwargs):
            if self.kill_at is not None and self.count == self.kill_at:
                raise Killed(name)
            self.count += 1
            self.ops.append(f"{name} {Path(args[1]).name}" if name == "replace" else name)
            return fn(*args, **kwargs)
        return wrapped


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _truncate_temporaries(ckpt: Path) -> None:
    for path in ckpt.glob("*.tmp"):
        if path.stat().st_nlink > 1:
            continue  # a hard link to a complete file (last.safetensors.tmp): linked, never partly written
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """A run committed at step 1 (its checkpoint folder kept), its weights at steps 1 and 2."""
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(smoke(out))
    trainer.fit(until=1)  # leaves a committed checkpoint of step 1
    snapshot = tmp_path_factory.mktemp("snapshot") / "checkpoints"
    shutil.copytree(out / "checkpoints", snapshot)
    w1 = _weights(trainer)
    trainer.fit(until=2)
    return trainer, out, snapshot, w1, _weights(trainer)


def test_save_commits_one_pair_and_tidies(two_steps):
    trainer, out, snapshot, w1, _ = two_steps
    pair = find_committed(snapshot)
    assert pair.step == 1 and pair.weights.name == "step-00000001.safetensors"
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "last.json", "last.safetensors", "step-00000001.safetensors", "step-00000001.state.pt"]
    ckpt = out / "checkpoints"  # the snapshot is a copy, which does not keep hard links
    assert os.path.samefile(ckpt / "last.safetensors", find_committed(ckpt).weights)


def test_kill_at_every_write_boundary_resumes_a_consistent_pair(two_steps, monkeypatch):
    trainer, out, snapshot, w1, w2 = two_steps
    ckpt = out / "checkpoints"
    with monkeypatch.context() as m:  # count the boundaries of one complete save
        shutil.rmtree(ckpt)
        shutil.copytree(snapshot, ckpt)
        switch = KillSwitch(m, None)
        trainer.save_state()
    ops = switch.ops
    commit_at = ops.index("replace last.json")
    assert ops.index("replace step-00000002.safetensors") < ops.index("replace step-00000002.state.pt") < commit_at
    assert ops[commit_at - 1] == "fsync" and len(ops) >= 12
    outcomes = []
    for k in range(len(ops) + 1):
        shutil.rmtree(ckpt)
        shutil.copytree(snapshot, ckpt)
        with monkeypatch.context() as m:
            KillSwitch(m, k if k < len(ops) else None)
            try:
                trainer.save_state()
            except Killed:
                pass
        _truncate_temporaries(ckpt)
        resumed = Trainer(smoke(out), resume=True)
        expected_step = 1 if k <= commit_at else 2
        assert resumed.step == expected_step, f"kill before boundary {k} ({ops[min(k, len(ops) - 1)]})"
        assert _same(_weights(resumed), w1 if expected_step == 1 else w2), f"kill before boundary {k}"
        outcomes.append(expected_step)
        # the next save after a resume (same step: new names, the committed files are not rewritten) succeeds and
        # leaves only the new pair
        resumed.save_state()
        names = sorted(p.name for p in ckpt.iterdir())
        assert names == ["last.json", "last.safetensors", f"step-{expected_step:08d}-1.safetensors",
                         f"step-{expected_step:08d}-1.state.pt"], (k, names)
        assert find_committed(ckpt).step == expected_step
    assert outcomes.count(1) == commit_at + 1 and outcomes.count(2) == len(ops) - commit_at


def test_legacy_pair_still_resumes(two_steps, tmp_path):
    """A folder written before the manifest (last.safetensors + last.state.pt, same step) resumes."""
    trainer, out, snapshot, w1, _ = two_steps
    legacy = tmp_path / "checkpoints"
    legacy.mkdir()
    shutil.copyfile(snapshot / "step-00000001.safetensors", legacy / "last.safetensors")
    shutil.copyfile(snapshot / "step-00000001.state.pt", legacy / "last.state.pt")
    resumed = Trainer(smoke(tmp_path), resume=True)
    assert resumed.step == 1 and _same(_weights(resumed), w1)


# ------------------------------------------------------------------------------------- one-line errors


def _one_line_error(capsys, argv: list[str]) -> str:
    rc = cli_main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "weights_only=False" not in err.replace(" ", "")
    return err


@pytest.mark.parametrize("content, reason", ids=["empty", "not_a_zip", "object"], argvalues=[
    (b"", "truncated"),
    (b"PK\x03\x04 not really a zip", "not a readable training state file"),
    (pickle.dumps(Killed("x"), protocol=2), "refused"),  # an arbitrary object: weights_only refuses it
])
def test_resume_with_a_bad_state_file_is_one_line(two_steps, tmp_path, capsys, content, reason):
    _, _, snapshot, _, _ = two_steps
    ckpt = tmp_path / "checkpoints"
    shutil.copytree(snapshot, ckpt)
    (ckpt / "step-00000001.state.pt").write_bytes(content)
    err = _one_line_error(capsys, ["train", "--config", str(SMOKE), f"out_dir={tmp_path}", "--resume"])
    assert "step-00000001.state.pt" in err and reason in err


def test_resume_with_a_truncated_real_state_file(two_steps, tmp_path, capsys):
    _, _, snapshot, _, _ = two_steps
    ckpt = tmp_path / "checkpoints"
    shutil.copytree(snapshot, ckpt)
    state = ckpt / "step-00000001.state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    err = _one_line_error(capsys, ["train", "--config", str(SMOKE), f"out_dir={tmp_path}", "--resume"])
    assert str(state) in err


def test_state_file_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "x.state.pt"
    torch.save({"format": "something else"}, path)
    with pytest.raises(CheckpointPairError, match="x.state.pt: not a training state file"):
        load_state_file(path, STATE_FORMAT)
    with pytest.raises(CheckpointPairError, match="is a directory"):
        load_state_file(tmp_path, STATE_FORMAT)


def test_init_checkpoint_bad_file_or_directory_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    err = _one_line_error(capsys, ["train", "--config", str(SMOKE), f"out_dir={tmp_path / 'o'}",
                                   f"model.init_checkpoint={bad}"])
    assert str(bad) in err and "not a readable safetensors checkpoint" in err
    err = _one_line_error(capsys, ["train", "--config", str(SMOKE), f"out_dir={tmp_path / 'o'}",
                                   f"model.init_checkpoint={tmp_path}"])
    assert str(tmp_path) in err and "is a directory" in err and "os error" not in err
    missing = tmp_path / "runs" / "default_stage9" / "checkpoints" / "last.safetensors"  # a stage not trained yet
    err = _one_line_error(capsys, ["train", "--config", str(SMOKE), f"out_dir={tmp_path / 'o'}",
                                   f"model.init_checkpoint={missing}"])
    assert str(missing) in err and "model.init_checkpoint" in err and "train the stage it names first" in err
    err = _one_line_error(capsys, ["train", "--config", str(SMOKE), f"out_dir={tmp_path / 'o'}",
                                   "model.init_checkpoint=nowhere/default.safetensors"])  # a fine-tune from elsewhere
    assert f"nowhere/default.safetensors not found (relative to {Path.cwd()}): pass model.init_checkpoint=PATH" in err


def test_non_finite_init_checkpoint_is_refused(two_steps, tmp_path):
    trainer = two_steps[0]
    model = trainer.model
    key, param = next((k, p) for k, p in model.named_parameters() if p.is_floating_point())
    with torch.no_grad():
        saved = param.detach().clone()
        param.view(-1)[0] = float("nan")
        path = save_checkpoint(model, tmp_path / "nan.safetensors")
        param.copy_(saved)
    with pytest.raises(CheckpointError, match=f"{key!r} holds 1 NaN or inf"):
        Trainer(smoke(tmp_path / "o", f"model.init_checkpoint={path}"))


def test_manifest_naming_a_missing_file(tmp_path):
    (tmp_path / "last.json").write_text('{"step": 3, "weights": "step-00000003.safetensors", '
                                        '"state": "step-00000003.state.pt"}')
    with pytest.raises(CheckpointPairError, match="step-00000003.safetensors, which is missing"):
        find_committed(tmp_path)
    (tmp_path / "last.json").write_text("{")
    with pytest.raises(CheckpointPairError, match="not a checkpoint manifest"):
        find_committed(tmp_path)
    assert train_state.MANIFEST == "last.json"
