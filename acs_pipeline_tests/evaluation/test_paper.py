"""Tests for evaluation.paper: our predictor names mapped to the paper's."""

from acs_pipeline.evaluation.paper import paper_name


def test_paper_name_aliases():
    assert paper_name("resnet18") == "ResNet-18"
    assert paper_name("hubert_ecg_base") == "HuBERT-ECG"
    assert paper_name("ecg_omi") == "ECG-OMI (ResNet-6)"
    assert paper_name("baseline") == "logistic regression (4 flags)"
    assert paper_name("logistic_baseline") == "logistic regression (4 flags)"
    assert paper_name("hubert_small") == "HuBERT-ECG"
    assert paper_name("has_st_eleva") == "has_st_eleva"
    assert paper_name("mystery") is None
