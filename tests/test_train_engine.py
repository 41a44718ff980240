"""The trainer: it learns, hooks fire where promised, and a killed run resumes exactly."""

from __future__ import annotations

import pytest
import torch

from compress.train.engine import load_best, resolve_config, train
from tests.train_support import Rectangles, TinyDetector, collate, tiny_cfg


def make(seed: int = 0, bn: bool = True) -> TinyDetector:
    torch.manual_seed(seed)
    return TinyDetector(bn=bn)


def test_training_lowers_the_loss(tmp_path):
    det = make()
    history = train(det, Rectangles(16), None, tiny_cfg(epochs=4), tmp_path, collate_fn=collate)
    losses = [e["loss"] for e in history["epochs"]]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    assert len(history["steps"]) == 4 * 4 and history["images_seen"] == 64
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "history.json").is_file()
    # warm-up then cosine: lr rises over the first 2 steps, ends near lr * lrf
    lrs = [s["lr"] for s in history["steps"]]
    assert lrs[0] < lrs[2] and lrs[-1] < 0.1 * max(lrs)


class Recorder:
    def __init__(self) -> None:
        self.steps, self.epochs, self.grad_seen = [], [], True

    def after_backward(self, model, epoch, step):
        self.steps.append((epoch, step))
        self.grad_seen &= model.neck.bn.weight.grad is not None

    def on_epoch_end(self, model, epoch, metrics):
        self.epochs.append((epoch, round(metrics["loss"], 6)))


def test_hooks_run_once_per_optimizer_step_with_gradients(tmp_path):
    rec = Recorder()
    cfg = tiny_cfg(epochs=2, accumulate=2)  # 4 batches per epoch -> 2 optimizer steps
    history = train(make(), Rectangles(16), None, cfg, tmp_path, hooks=[rec], collate_fn=collate)
    assert rec.steps == [(0, 0), (0, 1), (1, 2), (1, 3)]
    assert rec.grad_seen
    assert [e for e, _ in rec.epochs] == [0, 1]
    assert rec.epochs[1][1] == round(history["epochs"][1]["loss"], 6)


class Kill:
    """Simulates a crash: raises from the hook before optimizer step `at`; counts the steps it
    saw, a state that must survive the resume through state_dict/load_state_dict."""

    def __init__(self, at: int = -1) -> None:
        self.at, self.seen = at, 0

    def after_backward(self, model, epoch, step):
        if step == self.at:
            raise KeyboardInterrupt(f"killed at step {step}")
        self.seen += 1

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


@pytest.mark.parametrize(
    "extra", [{}, {"accumulate": 2, "ema": True, "optimizer": "adamw", "lr": 0.01}]
)
def test_kill_mid_epoch_and_resume_reaches_the_same_weights(tmp_path, extra):
    data = Rectangles(20, hflip=0.5)  # random flips: the augmentation RNG must resume too
    cfg = tiny_cfg(epochs=3, checkpoint_every=1, **extra)
    ref = make()
    ref_hist = train(ref, data, None, cfg, tmp_path / "ref", collate_fn=collate)

    crashed = make()
    with pytest.raises(KeyboardInterrupt):
        train(crashed, data, None, cfg, tmp_path / "run", hooks=[Kill(at=7)], collate_fn=collate)
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["step"] == 7 and 0 < saved["batch"] < 5  # stopped part-way through an epoch

    resumed = make(seed=99)  # a fresh process would build different initial weights
    counter = Kill()
    hist = train(
        resumed,
        data,
        None,
        {**cfg, "resume": True},
        tmp_path / "run",
        hooks=[counter],
        collate_fn=collate,
    )
    assert counter.seen == len(ref_hist["steps"])  # the hook's own state resumed too
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [s["loss"] for s in hist["steps"]] == [s["loss"] for s in ref_hist["steps"]]
    assert [e["loss"] for e in hist["epochs"]] == pytest.approx(
        [e["loss"] for e in ref_hist["epochs"]]
    )
    assert hist["resumed"][0]["step"] == 7


def test_resume_without_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(make(), Rectangles(8), None, tiny_cfg(resume=True), tmp_path, collate_fn=collate)


@pytest.mark.parametrize(
    "bad, message",
    [({"optimizer": "lion"}, "optimizer must be one of"), ({"epochs": 0}, "epochs must be >= 1")],
)
def test_bad_settings_are_rejected_before_training(bad, message):
    with pytest.raises(ValueError, match=message):
        resolve_config(tiny_cfg(**bad))


def test_evaluation_keeps_the_best_model(tmp_path):
    det = make()
    cfg = tiny_cfg(epochs=3, eval_every=1)
    history = train(
        det, Rectangles(16), Rectangles(8, offset=100), cfg, tmp_path, collate_fn=collate
    )
    aps = [e["AP50"] for e in history["epochs"]]
    assert history["best"]["metrics"]["AP50"] == max(aps)
    fresh = make(seed=5)
    assert load_best(fresh, tmp_path)
    best_epoch = aps.index(max(aps))
    if best_epoch == 2:  # the best is the last: same weights as the trained model
        for a, b in zip(det.state_dict().values(), fresh.state_dict().values()):
            assert torch.equal(a, b)


def test_tiny_yolo_resumes_exactly(tmp_path):
    """The same kill/resume check through the Darknet YOLO model and its loss."""
    from tests.train_support import tiny_yolo

    data = Rectangles(12, hflip=0.5)
    cfg = tiny_cfg(epochs=2, checkpoint_every=1, lr=0.01)
    ref = tiny_yolo(32)
    train(ref, data, None, cfg, tmp_path / "ref", collate_fn=collate)
    with pytest.raises(KeyboardInterrupt):
        train(
            tiny_yolo(32), data, None, cfg, tmp_path / "run", hooks=[Kill(at=4)], collate_fn=collate
        )
    resumed = tiny_yolo(32, seed=7)
    train(resumed, data, None, {**cfg, "resume": True}, tmp_path / "run", collate_fn=collate)
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
