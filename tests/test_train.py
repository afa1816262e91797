"""Training on generated data: outputs, learning, determinism, resume."""

import json
from pathlib import Path

import pytest
import torch

from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models import load_checkpoint
from stn_deploy.pytorch.train import TrainOptions, train

QUIET = {"progress": False, "log": lambda *_: None}
FACTORY = f"{Path(__file__).parent / 'corpus' / 'models.py'}:stn_out_size"  # a user's factory


def _opts(**kw):
    base = dict(
        model="mnist-affine",
        distortion="rts",
        epochs=2,
        batch_size=64,
        lr=0.003,
        optimizer="adam",
        schedule="step",
        synthetic=True,
        limit_train=256,
        limit_test=128,
        seed=7,
        threads=1,
    )
    base.update(kw)
    return TrainOptions(**base)


def test_run_directory_contents(tmp_path):
    result = train(_opts(), tmp_path / "run", **QUIET)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt",
        "metrics.json",
        "rectification.png",
    ]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.to_dict()))
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for h in metrics["history"]:
        assert 0 <= h["test_error"] <= 100 and h["images_per_s"] > 0 and h["train_loss"] > 0
    assert metrics["machine"]["cores"] >= 1
    assert (run / "rectification.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = load_checkpoint(run / "checkpoint.pt")
    assert loaded.input_shape == (1, 42, 42)
    assert loaded.config.normalization == {"mean": [0.1307], "std": [0.3081]}
    assert loaded.config.extra["trained_on"]["distortion"] == "rts"


@pytest.mark.slow
def test_learns_generated_digits(tmp_path):
    result = train(
        _opts(
            distortion="none",
            epochs=4,
            limit_train=2048,
            limit_test=512,
            batch_size=32,
            lr=0.003,
            schedule="none",
        ),
        tmp_path / "run",
        **QUIET,
    )
    errors = [h["test_error"] for h in result.history]
    assert errors[-1] < 40.0, errors  # chance is 90 %
    # and it kept learning after the first epoch (measured: 1.36 -> 0.14; flat if it did not)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0], losses


def _weights(path):
    return load_checkpoint(path).model.state_dict()


def test_deterministic_for_a_seed(tmp_path):
    train(_opts(), tmp_path / "a", **QUIET)
    train(_opts(), tmp_path / "b", **QUIET)
    train(_opts(seed=8), tmp_path / "c", **QUIET)
    a, b, c = (_weights(tmp_path / n / "checkpoint.pt") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("schedule", ["step", "onecycle"])
def test_resume_continues_an_interrupted_run_exactly(tmp_path, schedule):
    kw = dict(epochs=3, schedule=schedule, optimizer="sgd", lr=0.02)
    train(_opts(**kw), tmp_path / "full", **QUIET)
    stopped = train(
        _opts(max_minutes=1e-9, **kw), tmp_path / "part", **QUIET
    )  # "interrupted" after epoch 1
    assert stopped.epochs_run == 1 and stopped.stopped_early
    resumed = train(_opts(epochs=None), tmp_path / "part", resume=True, **QUIET)
    assert resumed.epochs_run == 3 and resumed.options["schedule"] == schedule
    full, part = (
        _weights(tmp_path / "full" / "checkpoint.pt"),
        _weights(tmp_path / "part" / "checkpoint.pt"),
    )
    for k in full:
        torch.testing.assert_close(part[k], full[k], atol=0, rtol=0, msg=k)


def test_resume_extends_only_constant_lr_runs(tmp_path):
    train(_opts(epochs=1, schedule="none"), tmp_path / "flat", **QUIET)
    assert train(_opts(epochs=2), tmp_path / "flat", resume=True, **QUIET).epochs_run == 2
    train(_opts(epochs=1, schedule="step"), tmp_path / "step", **QUIET)
    with pytest.raises(StnDeployError, match="planned for 1 epochs with a step schedule"):
        train(_opts(epochs=2), tmp_path / "step", resume=True, **QUIET)


def test_refuses_to_overwrite_or_resume_nothing(tmp_path):
    train(_opts(epochs=1), tmp_path / "run", **QUIET)
    with pytest.raises(StnDeployError, match="already holds a run"):
        train(_opts(epochs=1), tmp_path / "run", **QUIET)
    train(_opts(epochs=1), tmp_path / "run", force=True, **QUIET)
    with pytest.raises(StnDeployError, match="nothing to resume"):
        train(_opts(epochs=1), tmp_path / "empty", resume=True, **QUIET)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"epochs": 0}, "epochs must"),
        ({"batch_size": 0}, "batch_size must"),
        ({"lr": -1.0}, "lr must"),
        ({"distortion": "xyz"}, "unknown distortion"),
        ({"model": "resnet"}, "unknown model"),
        ({"model": "mnist-cnn", "mode": "bicubic"}, "has no STN"),
    ],
)
def test_bad_options_fail_before_writing(tmp_path, kw, match):
    with pytest.raises(StnDeployError, match=match):
        train(_opts(**kw), tmp_path / "run", **QUIET)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_cnn_baseline_and_tps_train(tmp_path):
    r = train(_opts(model="mnist-cnn", epochs=1), tmp_path / "cnn", **QUIET)
    assert r.picture is None and "picture" not in r.to_dict()
    r = train(
        _opts(model="mnist-tps", epochs=1, mode="bicubic", padding_mode="border"),
        tmp_path / "tps",
        **QUIET,
    )
    assert r.picture == "rectification.png"
    assert load_checkpoint(tmp_path / "tps" / "checkpoint.pt").model.stn.sampler.mode == "bicubic"


def test_loc_lr_scale_gives_the_localisation_net_its_own_rate(tmp_path):
    from stn_deploy.pytorch.models import build_model
    from stn_deploy.pytorch.train import _make_optimizer

    model = build_model("mnist-affine", in_size=42)
    opt, _ = _make_optimizer(_opts(loc_lr_scale=0.1, schedule="none", lr=0.01), model, 10)
    assert [g["lr"] for g in opt.param_groups] == [0.01, pytest.approx(0.001)]
    loc = {id(p) for n, p in model.named_parameters() if n.startswith("stn.")}
    assert {id(p) for p in opt.param_groups[1]["params"]} == loc
    opt, sched = _make_optimizer(_opts(loc_lr_scale=0.1, schedule="onecycle", lr=0.01), model, 10)
    assert [g["max_lr"] for g in opt.param_groups] == [0.01, pytest.approx(0.001)]
    r = train(_opts(epochs=1, loc_lr_scale=0.1), tmp_path / "run", **QUIET)
    assert r.options["loc_lr_scale"] == 0.1
    with pytest.raises(StnDeployError, match="no localisation net"):
        train(_opts(model="mnist-cnn", epochs=1, loc_lr_scale=0.1), tmp_path / "cnn", **QUIET)
    with pytest.raises(StnDeployError, match="loc_lr_scale must"):
        train(_opts(epochs=1, loc_lr_scale=0.0), tmp_path / "zero", **QUIET)


RECIPES = [
    {"theta_reg": 0.5},
    {"freeze_loc_epochs": 1},
    {"freeze_classifier_epochs": 1},
    {"loc_lr_scale": 0.1, "padding_mode": "border", "theta_reg": 0.1},
    {"epoch_images": 70},
]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_options_are_deterministic_for_a_seed(tmp_path, recipe):
    kw = dict(model="paper-st-cnn", limit_train=128, limit_test=32, epochs=2, **recipe)
    train(_opts(**kw), tmp_path / "a", **QUIET)
    train(_opts(**kw), tmp_path / "b", **QUIET)
    train(_opts(seed=8, **kw), tmp_path / "c", **QUIET)
    a, b, c = (_weights(tmp_path / n / "checkpoint.pt") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_out_size_sets_the_canvas_the_classifier_sees(tmp_path):
    kw = dict(model="paper-st-cnn", limit_train=64, limit_test=16, epochs=1, out_size=32)
    train(_opts(**kw), tmp_path / "run", **QUIET)
    loaded = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert loaded.config.args["out_size"] == 32
    assert loaded.model.rectify(torch.zeros(2, 1, 42, 42)).shape == (2, 1, 32, 32)


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("frozen", ["loc", "classifier"])
def test_warm_up_freezes_one_part_for_its_epochs(tmp_path, frozen):
    from stn_deploy.pytorch.models import build_model

    torch.manual_seed(7)  # train() seeds the same way before building the model
    init = build_model("paper-st-cnn", in_size=42).state_dict()
    kw = dict(model="paper-st-cnn", limit_train=128, limit_test=32, schedule="none")
    train(_opts(epochs=1, **{f"freeze_{frozen}_epochs": 1}, **kw), tmp_path / "one", **QUIET)
    one = _weights(tmp_path / "one" / "checkpoint.pt")
    loc = {k for k in init if k.startswith("stn.")}
    assert _changed(init, one) == (set(init) - loc if frozen == "loc" else loc)
    train(_opts(epochs=2, **{f"freeze_{frozen}_epochs": 1}, **kw), tmp_path / "two", **QUIET)
    assert _changed(one, _weights(tmp_path / "two" / "checkpoint.pt")) == set(init)


def test_theta_reg_penalises_the_distance_from_identity():
    from stn_deploy.pytorch.models import build_model
    from stn_deploy.pytorch.train import ThetaRecorder

    model = build_model("mnist-affine-series", in_size=42).train()
    recorder = ThetaRecorder(model, 2.0)
    x = torch.rand(3, 1, 42, 42)
    with torch.no_grad():
        model(x)
        assert float(recorder.penalty()) == 0.0  # both STNs start at the identity
        model.stn.stns[1].fc_loc[-1].bias.add_(torch.tensor([0.5, 0, 0, 0, 0, 0]))
        model(x)
        # second STN: mean over its 6 parameters of (0.5^2, 0, ...) = 0.25 / 6; times the weight
        assert float(recorder.penalty()) == pytest.approx(2.0 * 0.25 / 6)
        model.eval()(x)
        assert recorder.penalty() == 0.0  # nothing recorded outside training


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"model": "paper-cnn", "theta_reg": 0.1}, "theta_reg: this model has no spatial"),
        ({"model": "mnist-cnn", "freeze_loc_epochs": 1}, "freeze_loc_epochs: this model has no"),
        ({"theta_reg": -1.0}, "theta_reg must"),
        ({"freeze_loc_epochs": -1}, "freeze_loc_epochs must"),
        ({"freeze_loc_epochs": 1, "freeze_classifier_epochs": 1}, "exclude each other"),
        ({"epoch_images": 10**6}, "epoch_images is 1000000, the training set has 256"),
        ({"epoch_images": 0}, "epoch_images must"),
        ({"model": "paper-cnn", "out_size": 32}, "sampler options do not apply"),
        ({"model": FACTORY, "out_size": 32}, "out_size applies to"),
        ({"model": FACTORY, "padding_mode": "border"}, "padding_mode"),
    ],
)
def test_bad_recipe_options(tmp_path, kw, match):
    with pytest.raises(StnDeployError, match=match):
        train(_opts(epochs=1, **kw), tmp_path / "run", **QUIET)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
