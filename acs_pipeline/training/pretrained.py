"""HuBERT-ECG's start in the paper profile: the user's self-supervised pretrained backbone
(``hubert_ecg_<size>.pt``, never downloaded), handed to the ACS stage by a pass-through MACE
stage (``StagePlan.train`` is False; docs/recipes.md).

The setting (``ACS_HUBERT_PRETRAINED_URI``) names a local path or ``s3://`` URI; the file is read
through the allow-listing checkpoint loader (``models.checkpoints``) like the released weights.
Unset, a plan that needs it is refused; ``none-from-scratch`` trains from a random
initialisation instead, and the stage's inputs and model card say so.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from collections.abc import Mapping
from pathlib import Path

import torch

from acs_pipeline.io.storage import Storage
from acs_pipeline.models.checkpoints import (
    RELEASED_CHECKPOINT_GLOBALS,
    extract_state_dict,
    load_checkpoint,
)
from acs_pipeline.models.registry import build_model
from acs_pipeline.models.specs import hubert_size
from acs_pipeline.training.recipes import StagePlan
from acs_pipeline.training.stages import MODEL_CARD, WEIGHTS, StageResult, stage_dir

SETTING = "ACS_HUBERT_PRETRAINED_URI"
FROM_SCRATCH = "none-from-scratch"


class PretrainedWeightsError(ValueError):
    """The pretrained weights a plan needs are not configured or do not fit."""


def pretrained_source(p: StagePlan, setting: str | None) -> str | None:
    """Where the pretrained weights of plan ``p`` come from: the setting's URI; ``None`` when
    the plan starts otherwise or the setting asks for ``none-from-scratch``. Raises
    ``PretrainedWeightsError`` naming the setting when a plan needs them and it is unset."""
    if p.init != "pretrained":
        return None
    if not setting:
        size = hubert_size(p.model, p.profile)
        raise PretrainedWeightsError(
            f"{p.model} in the {p.profile} profile is fine-tuned from the self-supervised "
            f"pretrained HuBERT-ECG backbone (hubert_ecg_{size}.pt), which is never downloaded: "
            f"set {SETTING} to its local path or s3:// URI, or to {FROM_SCRATCH!r} to train "
            "from a random initialisation instead (not the paper's recipe)")
    return None if setting == FROM_SCRATCH else setting


def read_uri(uri: str, endpoint_url: str | None = None) -> bytes:
    """The bytes of one file named by a local path or ``s3://bucket/key`` URI."""
    if uri.startswith("s3://"):
        parent, name = posixpath.split(uri.rstrip("/"))
    else:
        path = Path(uri).expanduser().resolve()
        parent, name = str(path.parent), path.name
    if not name:
        raise PretrainedWeightsError(f"{SETTING}={uri!r} does not name a file")
    return Storage(parent, endpoint_url=endpoint_url).read_bytes(name)


def initial_weights(p: StagePlan, checkpoint: bytes | None, source: str
                    ) -> dict[str, torch.Tensor]:
    """The registry network's starting state dict for plan ``p``: initialised under the plan's
    seed, with the backbone of ``checkpoint`` (the authors' pretraining file) when given."""
    torch.manual_seed(p.config.seed)
    core = build_model(p.model, p.profile)
    if checkpoint is not None:
        obj = load_checkpoint(checkpoint, allowed=RELEASED_CHECKPOINT_GLOBALS)
        try:
            core.load_pretrained_backbone(extract_state_dict(obj), source)
        except ValueError as e:
            raise PretrainedWeightsError(str(e)) from e
    return core.state_dict()


def pass_through(storage: Storage, p: StagePlan, setting: str | None, *, work_key: str,
                 inputs: Mapping[str, str], endpoint_url: str | None = None) -> StageResult:
    """The pass-through stage of plan ``p`` (``p.train`` is False): no training; its weights
    are the starting weights (the pretrained backbone, or a random one with
    ``none-from-scratch``), stored in the stage's work folder with a model card."""
    if p.train:
        raise ValueError(f"{p.model}/{p.stage} trains; it is not a pass-through stage")
    source = pretrained_source(p, setting)
    raw = read_uri(source, endpoint_url) if source else None
    state = initial_weights(p, raw, source or FROM_SCRATCH)
    buf = io.BytesIO()
    torch.save(state, buf)
    weights = buf.getvalue()
    init = hashlib.sha256(raw).hexdigest()[:16] if raw is not None else FROM_SCRATCH
    base = stage_dir(p.model, p.stage, work_key)
    storage.write_bytes(f"{base}/{WEIGHTS}", weights)
    nan, uri = float("nan"), storage.uri(f"{base}/{WEIGHTS}")
    res = StageResult(
        model=p.model, stage=p.stage, profile=p.profile, work_key=work_key,
        checkpoint_uri=uri, weights_uri=uri,
        model_card_uri=storage.uri(f"{base}/{MODEL_CARD}"),
        weights_sha256=hashlib.sha256(weights).hexdigest(), weights_bytes=len(weights),
        n_params=sum(int(v.numel()) for v in state.values()), best_val_auroc=nan,
        best_val_loss=nan, epochs_run=0, global_step=0, resumed=False, wall_s=0.0,
        samples_per_s=0.0, config=p.config.to_dict(), counts={},
        inputs={**inputs, "pretrained": init})
    what = (f"the self-supervised pretrained backbone `{source}` (sha256 {init}...)" if raw
            else f"a random initialisation ({SETTING}={FROM_SCRATCH}: not the paper's recipe)")
    card = [f"# {p.model} - {p.stage} stage ({p.profile} profile): pass-through", "",
            f"Not trained: the paper fine-tunes {p.model} on ACS only. These weights are {what}"
            f", with the classification head initialised under seed {p.config.seed}; the acs "
            "stage starts from them (docs/recipes.md).", "",
            f"- weights: `{res.weights_uri}` (sha256 {res.weights_sha256[:16]}...)",
            f"- inputs: {json.dumps(res.inputs)}", "",
            "Intended use: research benchmark (ACS-BenchWork). Not a medical device."]
    storage.write_bytes(f"{base}/{MODEL_CARD}", ("\n".join(card) + "\n").encode())
    return res
