"""Importing the authors' released weights: checkpoints written here in their exact formats."""

import hashlib
import json
import os
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from acs_pipeline.defs.released import assets as released_assets
from acs_pipeline.defs.resources import PipelineSettings, resources_from_env
from acs_pipeline.io.storage import Storage
from acs_pipeline.models import released
from acs_pipeline.models.checkpoints import CheckpointError
from acs_pipeline.models.hubert import convert_weight_norm_keys
from acs_pipeline.models.registry import build_model, reference_layout
from acs_pipeline.models.specs import model_spec
from acs_pipeline.training import stages
from acs_pipeline_tests.conftest import env_for
from acs_pipeline_tests.released_fakes import hubert_ecg_module
from acs_pipeline_tests.s3_fixtures import s3_client

pytestmark = pytest.mark.usefixtures("single_thread_torch")

PARAMETRIZED = ("parametrizations.weight.original0", "parametrizations.weight.original1")
POS_CONV = "hubert_ecg.encoder.pos_conv_embed.conv."


class Exploit:
    """Runs a shell command when unpickled by a plain pickle."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


# ------------------------------------------------------------------------- checkpoint writers


def lightning_checkpoint(state: dict, **extra) -> dict:
    """A dict laid out like a Lightning 2.x ``.ckpt`` of the authors' modules (no key prefix)."""
    return {
        "epoch": 49,
        "global_step": 1100,
        "pytorch-lightning_version": "2.1.3",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 49}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_auc'}": {"best_model_score": 0.7}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}],
        "lr_schedulers": [{"mode": "min", "factor": 0.1, "best": 0.4}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"init_lr": 1e-4},
        **extra,
    }


def authors_config(cls, **overrides):
    """HuBERT-ECG small as the authors' pickled config holds it (pretraining masking on)."""
    kwargs = dict(
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        intermediate_size=2048,
        conv_dim=[512] * 5,
        conv_kernel=[10, 3, 3, 2, 2],
        conv_stride=[4, 2, 2, 2, 2],
        conv_bias=False,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        mask_time_prob=0.08,
        vocab_sizes=[100],
    )
    return cls(**{**kwargs, **overrides})


def save_hubert(path: Path, state: dict, extra: dict | None = None, **config_overrides) -> Path:
    """A ``torch.save`` dict like the released HuBERT-ECG files (finetune.py's keys)."""
    with hubert_ecg_module() as cls:
        torch.save(
            {
                "global_step": 7000,
                "best_val_loss": torch.tensor(0.61),
                "model_config": authors_config(cls, **config_overrides),
                "model_state_dict": state,
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-5}]},
                "lr_scheduler_state_dict": {"last_epoch": 7000, "lr_lambdas": [{}]},
                "patience_count": 3,
                "linear": False,
                "leads_as_channels": False,
                "finetuning_vocab_size": 2,
                "use_label_embedding": False,
                "target_val_auroc": 0.64,
                **(extra or {}),
            },
            path,
        )
    assert "hubert_ecg" not in sys.modules
    return path


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("resnet18", "paper").eval()


@pytest.fixture(scope="module")
def s4_grown() -> torch.nn.Module:
    """The paper S4 after its kernels grew for 5000 samples (what the released file holds)."""
    torch.manual_seed(2)
    model = build_model("s4", "paper")
    model.grow(5000)
    return model.eval()


@pytest.fixture(scope="module")
def hubert_small() -> torch.nn.Module:
    torch.manual_seed(3)
    return build_model("hubert_small", "paper").eval()


def ecgs(n: int, channels: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, channels, 5000)) * 0.3).astype(
        np.float16
    )


def assert_same_state(loaded: torch.nn.Module, source: torch.nn.Module) -> None:
    want = source.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key


# ---------------------------------------------------------------------------------- Lightning


@pytest.mark.parametrize("prefix", ["", "model.", "net."])
def test_resnet18_lightning_checkpoint_loads_and_predicts(tmp_path, resnet18, prefix):
    state = {prefix + k: v for k, v in resnet18.state_dict().items()}
    path = tmp_path / "resnet18.ckpt"
    torch.save(
        lightning_checkpoint(state, hyper_parameters={"channels": 32, "init_lr": 1e-4}), path
    )
    loaded = released.load_released("resnet18", path)
    assert_same_state(loaded.module, resnet18)
    info = loaded.info
    assert (info.name, info.registry_name, info.view) == ("resnet18", "resnet18", "ecg_3by4")
    assert info.n_params == 2_254_273
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.bytes == path.stat().st_size
    assert info.config["epoch"] == 49 and info.config["global_step"] == 1100
    assert info.config["hyper_parameters"] == {"channels": 32, "init_lr": 1e-4}
    assert info.config["state_dict_prefix"] == prefix
    json.dumps(info.to_dict())  # metadata-ready
    x = ecgs(3, 3)
    got = released.predict_released(loaded, x)
    with torch.no_grad():
        want = torch.sigmoid(resnet18(torch.from_numpy(x).float()).reshape(-1)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.ptp(got) > 0


def test_s4_checkpoint_with_grown_kernel_buffers_loads(tmp_path, s4_grown):
    state = dict(s4_grown.state_dict())
    omega = "s4_layers.0.kernel.kernel.omega"
    assert list(state[omega].shape) == reference_layout("s4")[omega] == [4097, 2]
    # As in the authors' files, B and P of a layer are views of one storage.
    b, p = "s4_layers.0.kernel.kernel.B", "s4_layers.0.kernel.kernel.P"
    shared = torch.cat([state[b], state[p]])
    state[b], state[p] = shared[:1], shared[1:]
    path = tmp_path / "S4.ckpt"
    hparams = {
        "d_input": 3,
        "d_output": 1,
        "d_model": 512,
        "d_state": 64,
        "n_layers": 4,
        "dropout": 0.2,
        "prenorm": False,
        "l_max": 1024,
        "init_lr": 1e-4,
    }
    torch.save(lightning_checkpoint(state, hyper_parameters=hparams), path)
    loaded = released.load_released("s4", path)
    assert_same_state(loaded.module, s4_grown)
    for layer in loaded.module.s4_layers:
        assert layer.kernel.kernel.l_kernel == 8192
    assert loaded.info.n_params == 2_372_097
    assert loaded.info.config["hyper_parameters"]["d_model"] == 512

    # A file taken before the first forward pass ([513, 2] buffers) loads as well.
    torch.manual_seed(4)
    fresh = build_model("s4", "paper")
    torch.save(lightning_checkpoint(fresh.state_dict()), tmp_path / "s4_acs.ckpt")
    early = released.load_released("s4", tmp_path / "s4_acs.ckpt")
    assert list(early.module.state_dict()[omega].shape) == [513, 2]


@pytest.mark.slow
def test_s4_released_predictions_match_the_source_model(tmp_path, s4_grown):
    torch.save(lightning_checkpoint(s4_grown.state_dict()), tmp_path / "s4.ckpt")
    loaded = released.load_released("s4", tmp_path / "s4.ckpt")
    x = ecgs(2, 3, seed=5)
    got = released.predict_released(loaded, x)
    with torch.no_grad():
        want = torch.sigmoid(s4_grown(torch.from_numpy(x).float())).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_hyper_parameters_that_change_the_network_are_refused(tmp_path):
    path = tmp_path / "s4.ckpt"
    hparams = {"d_model": 256, "prenorm": True, "init_lr": 1e-2}
    torch.save(
        lightning_checkpoint({"encoder.weight": torch.zeros(1)}, hyper_parameters=hparams), path
    )
    with pytest.raises(released.ReleasedWeightsError) as err:
        released.load_released("s4", path)
    message = str(err.value)
    assert str(path) in message
    assert "d_model=256 (ours 512)" in message and "prenorm=True (ours False)" in message
    assert "init_lr" not in message


# ------------------------------------------------------------------------------------- HuBERT


@pytest.mark.parametrize("spelling", ["legacy", "parametrized"])
def test_hubert_checkpoint_loads_with_either_weight_norm_spelling(tmp_path, hubert_small, spelling):
    state = dict(hubert_small.state_dict())
    assert POS_CONV + PARAMETRIZED[0] in state
    convert_weight_norm_keys(state, parametrized=spelling == "parametrized")
    assert (POS_CONV + "weight_g" in state) == (spelling == "legacy")
    state["hubert_ecg.masked_spec_embed"] = torch.rand(512)  # the pretraining mask token
    path = save_hubert(tmp_path / "hubert_ecg.pt", state)

    loaded = released.load_released("hubert", path)
    assert "hubert_ecg" not in sys.modules  # the pickled class was never imported
    assert_same_state(loaded.module, hubert_small)
    info = loaded.info
    assert (info.registry_name, info.view, info.n_params) == (
        "hubert_small",
        "ecg_12lead",
        30_736_514,
    )
    assert info.ignored_keys == ["hubert_ecg.masked_spec_embed"]
    assert info.config["pickled_class"] == "hubert_ecg.HuBERTECGConfig"
    assert info.config["size"] == "small"
    assert info.config["weight_norm_spelling"] == spelling
    assert info.config["hubert_config"]["vocab_sizes"] == [100]
    assert info.config["checkpoint"]["best_val_loss"] == pytest.approx(0.61)
    assert info.config["checkpoint"]["target_val_auroc"] == 0.64
    json.dumps(info.to_dict())

    x = ecgs(2, 12, seed=1)
    got = released.predict_released(loaded, x)
    want = stages.predict_model("hubert_small", hubert_small, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert ((got > 0) & (got < 1)).all()


def test_hubert_config_checks(tmp_path):
    tiny = {"classifier.2.bias": torch.zeros(2)}
    path = save_hubert(tmp_path / "a.pt", tiny, hidden_size=640)
    with pytest.raises(
        released.ReleasedWeightsError,
        match=r"hidden_size 640 and "
        r"num_hidden_layers 8 is none of the released sizes",
    ):
        released.load_released("hubert", path)
    path = save_hubert(tmp_path / "b.pt", tiny, num_attention_heads=4, conv_bias=True)
    with pytest.raises(released.ReleasedWeightsError) as err:
        released.load_released("hubert", path)
    assert "num_attention_heads=4 (ours 8)" in str(err.value)
    assert "conv_bias=True (ours False)" in str(err.value)
    # a file without its config is named
    torch.save({"model_state_dict": tiny}, tmp_path / "c.pt")
    with pytest.raises(released.ReleasedWeightsError, match=r"missing \['model_config'\]"):
        released.load_released("hubert", tmp_path / "c.pt")


# ----------------------------------------------------------------------------- strict matching


def test_missing_extra_and_misshapen_keys_are_all_listed(tmp_path, resnet18):
    state = dict(resnet18.state_dict())
    del state["fc.4.bias"], state["bn1.running_mean"]
    state["covars_cond.0.weight"] = torch.zeros(2, 2)
    state["fc.0.weight"] = torch.zeros(256, 128)
    path = tmp_path / "resnet18.ckpt"
    torch.save(lightning_checkpoint(state), path)
    with pytest.raises(CheckpointError) as err:
        released.load_released("resnet18", path)
    assert str(err.value).splitlines() == [
        f"{path} does not fit ResNet1D:",
        "2 missing keys: bn1.running_mean; fc.4.bias",
        "1 unexpected keys: covars_cond.0.weight",
        "1 shape mismatches: fc.0.weight: checkpoint [256, 128] != model [256, 256]",
    ]


def test_hubert_mismatch_is_listed_too(tmp_path, hubert_small):
    state = convert_weight_norm_keys(dict(hubert_small.state_dict()), parametrized=False)
    del state["classifier.2.weight"]
    state["hubert_ecg.final_proj.weight"] = torch.zeros(100, 512)
    path = save_hubert(tmp_path / "hubert_ecg.pt", state)
    with pytest.raises(CheckpointError) as err:
        released.load_released("hubert", path)
    message = str(err.value)
    assert "1 missing keys: classifier.2.weight" in message
    assert "1 unexpected keys: hubert_ecg.final_proj.weight" in message


def test_wrong_format_is_named(tmp_path, resnet18):
    path = tmp_path / "resnet18.ckpt"
    torch.save({"model_state_dict": resnet18.state_dict()}, path)
    with pytest.raises(
        released.ReleasedWeightsError,
        match=r"needs a 'state_dict' entry; found "
        r"keys \['model_state_dict'\]",
    ):
        released.load_released("resnet18", path)
    with pytest.raises(released.ReleasedWeightsError, match="unknown released model 'resnet50'"):
        released.load_released("resnet50", path)


# --------------------------------------------------------------------------- unsafe pickles


@pytest.mark.parametrize("model", ["resnet18", "hubert"])
def test_pickled_payload_is_refused_named_and_never_runs(tmp_path, model):
    marker = tmp_path / "pwned"
    path = tmp_path / ("resnet18.ckpt" if model == "resnet18" else "hubert_ecg.pt")
    payload = Exploit(str(marker))
    if model == "resnet18":
        torch.save(lightning_checkpoint({}, callbacks={"evil": payload}), path)
    else:
        save_hubert(path, {}, extra={"patience_count": payload})
    with pytest.raises(CheckpointError, match=r"refusing to unpickle posix\.system") as err:
        released.load_released(model, path)
    assert str(path) in str(err.value)
    assert not marker.exists()


# ------------------------------------------------------------------------------------- roots


def test_find_released_names_aliases_and_ambiguity(tmp_path):
    for name in ("S4.CKPT", "resnet18_1d.ckpt", "hubert_ecg.pt", "notes.txt", "sub/s4.ckpt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = released.find_released(Storage(str(tmp_path)))
    assert found == {"s4": "S4.CKPT", "resnet18": "resnet18_1d.ckpt", "hubert": "hubert_ecg.pt"}
    (tmp_path / "resnet18.ckpt").write_bytes(b"x")
    with pytest.raises(
        released.ReleasedWeightsError, match=r"resnet18: resnet18\.ckpt, resnet18_1d\.ckpt"
    ):
        released.find_released(Storage(str(tmp_path)))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "weights.bin").write_bytes(b"x")
    with pytest.raises(
        released.ReleasedWeightsError,
        match=r"no released weights found.*"
        r"s4: s4\.ckpt.*top-level files: \['weights\.bin'\]",
    ):
        released.import_released(Storage(str(empty)), Storage(str(tmp_path / "st")))


def test_import_from_s3_copies_verifies_and_reloads(tmp_path, resnet18, s3_server, s3_bucket):
    local = tmp_path / "resnet18.ckpt"
    torch.save(lightning_checkpoint(resnet18.state_dict()), local)
    client = s3_client(s3_server)
    client.put_object(Bucket=s3_bucket, Key="released/resnet18.ckpt", Body=local.read_bytes())
    client.put_object(Bucket=s3_bucket, Key="released/README.md", Body=b"weights")
    source = Storage(f"s3://{s3_bucket}/released", endpoint_url=s3_server)
    target = Storage(str(tmp_path / "storage"))

    (info,) = released.import_released(source, target)
    assert info.source_uri == f"s3://{s3_bucket}/released/resnet18.ckpt"
    assert info.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    stored = tmp_path / "storage" / info.stored_rel
    assert info.stored_rel == "models/released/resnet18/resnet18.ckpt"
    assert stored.read_bytes() == local.read_bytes()
    manifest = json.loads((tmp_path / "storage" / released.MANIFEST).read_text())
    assert manifest["source"] == f"s3://{s3_bucket}/released"
    assert manifest["models"]["resnet18"]["n_params"] == 2_254_273

    mtime = stored.stat().st_mtime_ns
    released.import_released(source, target)  # unchanged: not copied again
    assert stored.stat().st_mtime_ns == mtime

    loaded = released.load_imported(target, "resnet18")
    assert loaded is not None and loaded.info.stored_rel == info.stored_rel
    assert_same_state(loaded.module, resnet18)
    assert released.load_imported(target, "s4") is None

    data = stored.read_bytes()
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(released.ReleasedWeightsError, match="differs from the .* recorded"):
        released.load_imported(target, "resnet18")

    marker = tmp_path / "pwned"
    evil = lightning_checkpoint(resnet18.state_dict(), callbacks={"x": Exploit(str(marker))})
    path = tmp_path / "evil.ckpt"
    torch.save(evil, path)
    client.put_object(Bucket=s3_bucket, Key="released/resnet18.ckpt", Body=path.read_bytes())
    with pytest.raises(
        CheckpointError,
        match=rf"s3://{s3_bucket}/released/resnet18\.ckpt: "
        r"refusing to unpickle posix\.system",
    ):
        released.import_released(source, target)
    assert not marker.exists()


def test_predict_checks_the_view(tmp_path, resnet18):
    torch.save(lightning_checkpoint(resnet18.state_dict()), tmp_path / "resnet18.ckpt")
    loaded = released.load_released("resnet18", tmp_path / "resnet18.ckpt")
    with pytest.raises(
        released.ReleasedWeightsError,
        match=r"\(N, 3, L\) \(ecg_3by4\), got "
        r"\(2, 12, 5000\)",
    ):
        released.predict_released(loaded, ecgs(2, 12))
    assert released.predict_released(loaded, ecgs(0, 3)).shape == (0,)


# ------------------------------------------------------------------------------------ Dagster


def released_defs() -> list:
    return [
        released_assets.released_weights,
        *[released_assets.released_predictions_asset(m) for m in released_assets.RELEASED_MODELS],
    ]


def test_released_model_names_agree():
    assert released_assets.RELEASED_MODELS == released.RELEASED_MODELS
    for model, view in released_assets.RELEASED_VIEWS.items():
        registry = "hubert_small" if model == "hubert" else model
        assert model_spec(registry).view == view


def test_only_released_assets_depend_on_released_assets():
    """A skipped released asset skips the steps downstream of it in the same run: nothing
    outside the group may depend on one, so `materialize --select '*'` still runs the rest."""
    from acs_pipeline.definitions import defs

    specs = {s.key: s for s in defs().resolve_all_asset_specs()}
    group = {k for k, s in specs.items() if s.group_name == "released"}
    assert {k.to_user_string() for k in group} == {
        "released_weights",
        *[f"{m}/released_predictions" for m in released_assets.RELEASED_MODELS],
    }
    for key, spec in specs.items():
        if any(d.asset_key in group for d in spec.deps):
            assert key in group, key.to_user_string()


def test_unconfigured_released_assets_are_skipped_and_the_run_succeeds(tmp_path):
    env = env_for(tmp_path / "nowhere", tmp_path / "storage")
    assert resources_from_env(env)["settings"].released_weights_uri is None
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(released_defs(), resources=resources_from_env(env), instance=instance)
    assert result.success
    assert not result.get_asset_materialization_events()
    skipped = {e.step_key for e in result.all_events if e.is_step_skipped}
    assert skipped == {f"{m}__released_predictions" for m in released_assets.RELEASED_MODELS}
    logs = " ".join(e.user_message for e in instance.all_logs(result.run_id))
    assert "no released-weights root configured (ACS_RELEASED_WEIGHTS_URI)" in logs
    assert not (tmp_path / "storage" / released.MANIFEST).exists()


def test_released_weights_asset_records_each_model(tmp_path, resnet18):
    root = tmp_path / "weights"
    root.mkdir()
    torch.save(lightning_checkpoint(resnet18.state_dict()), root / "resnet18.ckpt")
    env = env_for(tmp_path / "nowhere", tmp_path / "storage", ACS_RELEASED_WEIGHTS_URI=str(root))
    result = dg.materialize(
        released_defs(),
        selection="released_weights",
        resources=resources_from_env(env),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("released_weights")
    meta = {k: v.value for k, v in mat.metadata.items()}
    sha = hashlib.sha256((root / "resnet18.ckpt").read_bytes()).hexdigest()
    assert meta["resnet18_sha256"] == sha
    assert meta["resnet18_parameters"] == 2_254_273
    assert meta["resnet18_uri"] == str(root / "resnet18.ckpt")
    assert meta["resnet18_bytes"] == (root / "resnet18.ckpt").stat().st_size
    assert meta["resnet18_config"]["format"] == "lightning"
    assert meta["models"] == ["resnet18"] and meta["missing"] == ["s4", "hubert"]
    assert (
        mat.tags["dagster/data_version"]
        == hashlib.sha256(f"resnet18:{sha}\n".encode()).hexdigest()[:16]
    )
    assert (tmp_path / "storage/models/released/resnet18/resnet18.ckpt").exists()

    # the report rows: only while a root is configured and a validation file exists
    st = Storage(str(tmp_path / "storage"))
    settings = resources_from_env(env)["settings"]
    assert released_assets.released_scores(st, settings) == []
    preds = pl.DataFrame({"ecg_id": ["b", "a"], "acs": [1, 0], "prediction": [0.7, 0.2]})
    st.write_bytes("predictions/resnet18/released_validation.csv", preds.write_csv().encode())
    (row,) = released_assets.released_scores(st, settings)
    assert row.name == "resnet18 (released)" and row.kind == "model"
    assert list(row.ecg_ids) == ["b", "a"] and row.validation.tolist() == [0.7, 0.2]
    assert sha[:12] in row.lineage and str(root) in row.lineage
    assert released_assets.released_scores(st, PipelineSettings()) == []


@pytest.mark.slow
def test_released_predictions_on_the_tiny_cohort(tiny_cohort, tmp_path, resnet18):
    """ResNet-18 only: the paper-size S4 and HuBERT-ECG take minutes per hundred ECGs on a CPU
    (their predictions are checked above); their assets must succeed without output."""
    from acs_pipeline.definitions import defs

    root = tmp_path / "weights"
    root.mkdir()
    torch.save(lightning_checkpoint(resnet18.state_dict()), root / "resnet18.ckpt")
    storage = tmp_path / "storage"
    env = env_for(tiny_cohort, storage, ACS_RELEASED_WEIGHTS_URI=str(root))
    d = defs()
    selection = dg.AssetSelection.groups("raw", "cohort", "tensors", "released")
    result = dg.materialize(
        [*d.assets, *d.asset_checks],
        selection=selection,
        resources=resources_from_env(env),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    for model in ("s4", "hubert"):
        assert not result.asset_materializations_for_node(f"{model}__released_predictions")

    cohort = pl.read_parquet(storage / "tables/cohort.parquet")
    val = cohort.filter((pl.col("cohort") == "tested") & (pl.col("split") == "validation"))
    holdout = len(list((tiny_cohort / "ed-bwh-ecg/holdout").rglob("*.npz")))
    for model in ("resnet18",):
        (mat,) = result.asset_materializations_for_node(f"{model}__released_predictions")
        meta = {k: v.value for k, v in mat.metadata.items()}
        v = pl.read_csv(
            storage / f"predictions/{model}/released_validation.csv",
            schema_overrides={"ecg_id": pl.String},
        )
        h = pl.read_csv(
            storage / f"predictions/{model}/released_holdout.csv",
            schema_overrides={"ecg_id": pl.String},
        )
        assert v.columns == ["ecg_id", "acs", "prediction"] and h.columns == ["ecg_id", "acs"]
        assert meta["dagster/row_count"] == len(v) == len(val) - meta["missing_tensors"]
        assert meta["holdout_rows"] == len(h) <= holdout and len(h) > 0
        assert set(v["ecg_id"]) <= set(val["ecg_id"])
        assert v["prediction"].is_between(0, 1).all() and h["acs"].is_between(0, 1).all()
        assert (
            meta["sha256"]
            == hashlib.sha256(
                (storage / f"predictions/{model}/released_validation.csv").read_bytes()
            ).hexdigest()
        )
        assert 0 <= meta["auroc"] <= 1
    scores = released_assets.released_scores(
        Storage(str(storage)), resources_from_env(env)["settings"]
    )
    assert [s.name for s in scores] == ["resnet18 (released)"]
