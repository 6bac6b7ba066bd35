"""HuBERT-ECG's pretrained start in the paper profile (training.pretrained): the refusal without
the setting, the explicit from-scratch opt-in, and the pass-through MACE stage whose weights
carry the user's pretrained backbone, read from a local path or S3."""

from __future__ import annotations

import io

import pytest
import torch

from acs_pipeline.io.storage import Storage
from acs_pipeline.models.checkpoints import CheckpointError
from acs_pipeline.models.registry import build_model
from acs_pipeline.training import pretrained, recipes, stages
from acs_pipeline_tests.s3_fixtures import s3_client

MODEL = "hubert_small"  # the paper recipe's mechanics at the smallest size


@pytest.fixture(scope="module")
def pretraining_file() -> tuple[bytes, dict[str, torch.Tensor]]:
    """A stand-in for ``hubert_ecg_small.pt``: the backbone under HuBERT-ECG's pretraining
    names, plus the pretraining-only head that fine-tuning drops."""
    torch.manual_seed(7)
    backbone = build_model(MODEL, "paper").hubert_ecg.state_dict()
    state = {**backbone, "final_proj.weight": torch.ones(100, 256)}
    buf = io.BytesIO()
    torch.save({"model_state_dict": state, "global_step": 1}, buf)
    return buf.getvalue(), backbone


def test_paper_hubert_refuses_without_the_setting_and_names_it():
    mace = recipes.plan(MODEL, "mace", "paper")
    assert (mace.init, mace.train) == ("pretrained", False)
    with pytest.raises(pretrained.PretrainedWeightsError,
                       match="ACS_HUBERT_PRETRAINED_URI.*none-from-scratch"):
        pretrained.pretrained_source(mace, None)
    assert pretrained.pretrained_source(mace, "none-from-scratch") is None
    assert pretrained.pretrained_source(mace, "/w/hubert_ecg_small.pt") == "/w/hubert_ecg_small.pt"
    # plans that do not start from pretrained weights ignore the setting
    assert pretrained.pretrained_source(recipes.plan(MODEL, "acs", "paper"), None) is None
    with pytest.raises(ValueError, match="not a pass-through"):
        pretrained.pass_through(Storage("/tmp"), recipes.plan(MODEL, "acs", "paper"), None,
                                work_key="k", inputs={})


def test_pass_through_stores_the_pretrained_backbone_and_a_seeded_head(tmp_path, pretraining_file):
    raw, backbone = pretraining_file
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "hubert_ecg_small.pt").write_bytes(raw)
    st = Storage(str(tmp_path / "root"))
    mace = recipes.plan(MODEL, "mace", "paper", seed=3)
    res = pretrained.pass_through(st, mace, str(tmp_path / "w" / "hubert_ecg_small.pt"),
                                  work_key="run1", inputs={"cohort": "abc"})
    assert (res.epochs_run, res.global_step, res.counts) == (0, 0, {})
    assert res.inputs["cohort"] == "abc" and len(res.inputs["pretrained"]) == 16
    weights = stages.load_stage_weights(st, res)
    for k, v in backbone.items():
        assert torch.equal(weights[f"hubert_ecg.{k}"], v), k
    again = pretrained.pass_through(st, mace, str(tmp_path / "w" / "hubert_ecg_small.pt"),
                                    work_key="run2", inputs={})
    assert again.weights_sha256 == res.weights_sha256  # the head follows the seed
    card = st.read_bytes("models/hubert_small/mace/runs/run1/model_card.md").decode()
    assert "pass-through" in card and "hubert_ecg_small.pt" in card
    # the acs stage starts from these weights like every model from its MACE weights
    net = stages.stage_network(st, res)
    assert torch.equal(net.classifier[0].weight, weights["classifier.0.weight"])
    scratch = pretrained.pass_through(st, mace, "none-from-scratch", work_key="run3", inputs={})
    assert scratch.inputs["pretrained"] == "none-from-scratch"
    assert "not the paper's recipe" in st.read_bytes(
        "models/hubert_small/mace/runs/run3/model_card.md").decode()


def test_pretrained_file_from_s3_and_misfits_are_refused(s3_server, s3_bucket, tmp_path,
                                                         pretraining_file):
    raw, backbone = pretraining_file
    s3_client(s3_server).put_object(Bucket=s3_bucket, Key="weights/hubert_ecg_small.pt", Body=raw)
    uri = f"s3://{s3_bucket}/weights/hubert_ecg_small.pt"
    assert pretrained.read_uri(uri, s3_server) == raw
    mace = recipes.plan(MODEL, "mace", "paper")
    res = pretrained.pass_through(Storage(str(tmp_path)), mace, uri, work_key="k", inputs={},
                                  endpoint_url=s3_server)
    assert res.inputs["pretrained"] != "none-from-scratch"
    wrong = io.BytesIO()
    torch.save({"model_state_dict": {"encoder.layer_norm.weight": torch.ones(3)}}, wrong)
    with pytest.raises(pretrained.PretrainedWeightsError, match="right size"):
        pretrained.initial_weights(mace, wrong.getvalue(), "hubert_ecg_large.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = io.BytesIO()
    torch.save({"model_state_dict": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        pretrained.initial_weights(mace, evil.getvalue(), "evil.pt")
