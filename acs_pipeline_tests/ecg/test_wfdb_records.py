from pathlib import Path

import numpy as np
import pytest
import wfdb

from acs_pipeline.ecg import leads
from acs_pipeline.ecg import wfdb_records as wfdb_source
from acs_pipeline.ecg.leads import WaveformError

PTB = Path(__file__).parents[1] / "data" / "ptbdb" / "s0010_re"


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return wfdb_source.record_to_12lead(PTB)


def test_record_to_12lead_matches_the_record(truth):
    assert truth.shape == (12, 5000) and truth.dtype == np.float32
    assert np.isfinite(truth).all()
    record = wfdb.rdrecord(str(PTB))
    names = [n.lower() for n in record.sig_name]
    for j, lead in enumerate(leads.LEADS):
        src = record.p_signal[:10000, names.index(lead.lower())]
        # 1000 -> 500 Hz: sample k sits on source sample 2k (anti-alias filtered, zero phase).
        every_other = src[200:9800:2]
        assert np.corrcoef(truth[j, 100:4900], every_other)[0, 1] > 0.995, lead
        assert np.abs(truth[j, 100:4900] - every_other).max() < 0.05, lead


def test_record_to_nightingale_layout(truth):
    ng = wfdb_source.record_to_nightingale(PTB)
    assert ng.shape == (15, 5000) and ng.dtype == np.float32
    for j in range(12):
        w = leads.lead_window(j)
        finite = np.isfinite(ng[j])
        assert finite[w].all() and finite.sum() == 1250, leads.LEADS[j]
        np.testing.assert_array_equal(ng[j, w], truth[j, w])
    np.testing.assert_array_equal(ng[12], truth[leads.LEADS.index("V1")])
    np.testing.assert_array_equal(ng[13], truth[leads.LEADS.index("II")])
    np.testing.assert_array_equal(ng[14], truth[leads.LEADS.index("V5")])
    # What a decoder would accept.
    assert leads.valid_mask(ng).sum() == 12 * 1250


def test_start_offset_and_suffix(truth):
    later = wfdb_source.record_to_12lead(str(PTB) + ".hea", start_s=2.0)
    np.testing.assert_array_equal(later[:, :4000], truth[:, 1000:])


def test_record_too_short_names_the_record():
    with pytest.raises(WaveformError, match="s0010_re") as info:
        wfdb_source.record_to_12lead(PTB, start_s=30.0)
    assert info.value.reason == "record_too_short"


def test_leads_picked_by_name_case_insensitive_and_resampled(tmp_path):
    fs = 250
    t = np.arange(12 * fs) / fs
    order = list(reversed(leads.LEADS))  # stored in another order, upper-case names
    # Lead "L" carries a sine of (index of L in LEADS + 1) Hz, so it can be told apart.
    sig = np.stack([np.sin(2 * np.pi * (leads.LEADS.index(n) + 1) * t) for n in order], axis=1)
    wfdb.wrsamp(
        "rec",
        fs=fs,
        units=["mV"] * 12,
        sig_name=[n.upper() for n in order],
        p_signal=sig,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(tmp_path),
    )
    out = wfdb_source.record_to_12lead(tmp_path / "rec", start_s=1.0)
    tt = 1.0 + np.arange(5000) / 500.0
    for j in range(12):
        expected = np.sin(2 * np.pi * (j + 1) * tt)
        np.testing.assert_allclose(out[j, 200:4800], expected[200:4800], atol=0.01)


def test_missing_leads(tmp_path):
    wfdb.wrsamp(
        "three",
        fs=500,
        units=["mV"] * 3,
        sig_name=["I", "II", "V1"],
        p_signal=np.zeros((6000, 3)),
        fmt=["16"] * 3,
        adc_gain=[1000.0] * 3,
        baseline=[0] * 3,
        write_dir=str(tmp_path),
    )
    with pytest.raises(WaveformError, match="three") as info:
        wfdb_source.record_to_nightingale(tmp_path / "three")
    assert info.value.reason == "missing_leads"
    assert "aVR" in str(info.value)


def test_unreadable_record(tmp_path):
    with pytest.raises(WaveformError) as info:
        wfdb_source.record_to_12lead(tmp_path / "nothing")
    assert info.value.reason == "corrupt_record"
    assert "nothing" in str(info.value)
