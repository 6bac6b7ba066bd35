import io
import struct
import zipfile

import numpy as np
import pytest
from scipy import stats

from acs_pipeline.ecg import leads
from acs_pipeline.ecg.leads import WaveformError


def make_raw(seed: int = 0) -> np.ndarray:
    """A (15, 5000) waveform in the Nightingale layout: short leads NaN outside their window."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(0.0, 0.2, size=(15, 5000)).astype(np.float32)
    for j in range(12):
        mask = np.ones(5000, dtype=bool)
        mask[leads.lead_window(j)] = False
        raw[j, mask] = np.nan
    return raw


def npz_bytes(*arrays, compressed: bool = False, **named) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, *arrays, **named)
    return buf.getvalue()


def test_constants_and_windows():
    assert leads.LEADS[leads.LEADS.index("aVR")] == "aVR" and len(leads.LEADS) == 12
    assert leads.lead_window(0) == slice(0, 1250)
    assert leads.lead_window(5) == slice(1250, 2500)  # aVF
    assert leads.lead_window(9) == slice(3750, 5000)  # V4


@pytest.mark.parametrize("compressed", [False, True])
def test_decode_round_trip(compressed):
    raw = make_raw()
    out = leads.decode_npz(npz_bytes(waveform=raw, compressed=compressed), "ecg0a.npz")
    assert out.dtype == np.float32 and out.shape == (15, 5000)
    np.testing.assert_array_equal(out, raw)  # NaN positions included


def test_decode_takes_first_array_and_casts():
    raw = make_raw().astype(np.float64)
    data = npz_bytes(raw, np.zeros(3))  # names arr_0, arr_1: the first is the waveform
    out = leads.decode_npz(data, "x")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, raw.astype(np.float32), equal_nan=True)
    fortran = np.asfortranarray(raw)
    np.testing.assert_array_equal(leads.decode_npz(npz_bytes(fortran), "x"), out)


def _corrupt_middle(data: bytes) -> bytes:
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    return bytes(bad)


def _bad_cases():
    good = npz_bytes(make_raw())
    all_nan = make_raw()
    all_nan[:12] = np.nan
    nan_long = make_raw()
    nan_long[13] = np.nan
    with_inf = make_raw()
    with_inf[14, 10] = np.inf
    return {
        "not_zip": (b"this is not a zip file", "corrupt_npz"),
        "truncated": (good[: len(good) // 2], "corrupt_npz"),
        "bit_flip": (_corrupt_middle(good), "corrupt_npz"),
        "empty": (npz_bytes(), "empty_npz"),
        "wrong_shape": (npz_bytes(np.zeros((12, 5000), np.float32)), "wrong_shape"),
        "object": (npz_bytes(np.empty((15, 5000), dtype=object)), "wrong_dtype"),
        "strings": (npz_bytes(np.full((15, 5000), "a")), "wrong_dtype"),
        "all_short_nan": (npz_bytes(all_nan), "all_leads_missing"),
        "long_nan": (npz_bytes(nan_long), "long_lead_missing"),
        "inf": (npz_bytes(with_inf), "non_finite"),
    }


@pytest.mark.parametrize("case", sorted(_bad_cases()))
def test_decode_bad_inputs(case):
    data, reason = _bad_cases()[case]
    with pytest.raises(WaveformError) as info:
        leads.decode_npz(data, "ed-bwh-ecg/v1/ecg-waveforms-npz/3d/3df45120a4.npz")
    assert info.value.reason == reason
    assert "3df45120a4.npz" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_decode_messages_say_what_was_expected():
    with pytest.raises(WaveformError, match=r"\(12, 5000\).*expected \(15, 5000\)"):
        leads.decode_npz(npz_bytes(np.zeros((12, 5000))), "f")
    raw = make_raw()
    raw[13] = np.nan
    with pytest.raises(WaveformError, match="long lead II"):
        leads.decode_npz(npz_bytes(raw), "f")


def test_decode_crc_is_checked_on_stored_member():
    # Flip a byte inside the array data of an uncompressed member: zipfile's CRC must catch it.
    data = npz_bytes(make_raw())
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.infolist()[0]
    offset = info.header_offset + 30 + len(info.filename) + 4000
    bad = bytearray(data)
    bad[offset] ^= 0x55
    with pytest.raises(WaveformError) as err:
        leads.decode_npz(bytes(bad), "f")
    assert err.value.reason == "corrupt_npz"


def test_valid_mask():
    raw = make_raw()
    raw[4, 1300] = np.nan
    mask = leads.valid_mask(np.stack([raw, raw]))
    assert mask.shape == (2, 12, 5000) and mask.dtype == bool
    assert mask[0, 0, :1250].all() and not mask[0, 0, 1250:].any()
    assert not mask[1, 4, 1300] and mask[1, 4, 1301]
    assert mask.sum() == 2 * (12 * 1250 - 1)


def test_lead_modes_known_values_and_ties():
    x = np.full((4, 20), np.nan)
    x[0, :10] = [1, 1, 1, 2, 2, 3, 3, 3, 3, -1]  # mode 3
    x[1, :6] = [5, 5, 4, 4, 7, 7]  # tie -> smallest (4)
    x[2, 5:8] = [0.30, 0.30, 0.31]  # exact: 0.30
    # x[3] all NaN -> 0
    np.testing.assert_allclose(leads.lead_modes(x, None), [3, 4, 0.30, 0], atol=1e-7)
    np.testing.assert_allclose(leads.lead_modes(x, 0.01), [3, 4, 0.30, 0], atol=1e-6)
    # Quantised: 0.301 and 0.299 fall in the same 0.01 bin, which beats the exact value 0.5 x2.
    y = np.array([[0.301, 0.299, 0.302, 0.5, 0.5, np.nan]])
    assert leads.lead_modes(y, 0.01)[0] == pytest.approx(0.30, abs=1e-6)
    assert leads.lead_modes(y, None)[0] == pytest.approx(0.5)


def test_lead_modes_match_scipy_on_quantised_data():
    rng = np.random.default_rng(4)
    x = rng.integers(-30, 30, size=(3, 12, 500)).astype(np.float64)
    x[rng.random(x.shape) < 0.3] = np.nan
    ref = stats.mode(x, axis=-1, nan_policy="omit").mode  # smallest among ties as well
    np.testing.assert_array_equal(leads.lead_modes(x, None), ref)
    np.testing.assert_allclose(leads.lead_modes(x * 0.01), ref * 0.01, atol=1e-6)


def test_lead_modes_wide_range_falls_back_to_sort():
    x = np.array([[0.0, 1e6, 2.0, 2.0, 1e6, 1e6], [1.0, 1.0, 1e5, 3.0, 4.0, 5.0]])
    np.testing.assert_allclose(leads.lead_modes(x, 0.01), [1e6, 1.0])


def test_to_3by4_unfiltered_composition_mode_and_nan():
    raw = np.full((15, 5000), np.nan, dtype=np.float32)
    rng = np.random.default_rng(1)
    offsets = np.arange(12, dtype=np.float32) * 0.5 - 2.0
    patterns = np.zeros((12, 1250), dtype=np.float32)
    for j in range(12):
        w = leads.lead_window(j)
        patterns[j, 100:400] = rng.normal(0.0, 1.0, 300) + 3.0  # off the baseline: mode stays
        raw[j, w] = offsets[j] + patterns[j]
    raw[12:] = 0.0
    raw[7, leads.lead_window(7).start + 500 : leads.lead_window(7).start + 600] = np.nan  # V2 gap
    out = leads.to_3by4(raw, apply_filter=False)
    assert out.shape == (3, 5000) and out.dtype == np.float32
    for i in range(3):
        for k in range(4):
            lead = 3 * k + i
            seg = out[i, k * 1250 : (k + 1) * 1250]
            expected = patterns[lead].copy()
            if lead == 7:
                expected[500:600] = 0.0  # NaN -> 0 after the mode is removed
            np.testing.assert_allclose(seg, expected, atol=1e-5, err_msg=leads.LEADS[lead])
    # Row 0 is I | aVR | V1 | V4 end to end.
    order = [leads.LEADS[3 * k] for k in range(4)]
    assert order == ["I", "aVR", "V1", "V4"]


def test_to_3by4_sums_overlapping_leads():
    raw = np.zeros((15, 5000), dtype=np.float32)
    raw[0, :] = 1.0  # I valid everywhere (shifted window): mode 1 -> 0
    raw[0, 10:20] = 5.0
    raw[3, 10:20] = 2.0  # aVR also valid there, mode 0
    out = leads.to_3by4(raw, apply_filter=False)
    np.testing.assert_allclose(out[0, 10:20], 4.0 + 2.0)
    assert np.count_nonzero(out) == 10


def _amplitude_ratio(freq: float) -> float:
    t = np.arange(5000) / 500.0
    x = np.sin(2 * np.pi * freq * t)
    y = leads.bandpass(x)
    mid = slice(1500, 3500)
    return float(np.sqrt(np.mean(y[mid] ** 2) / np.mean(x[mid] ** 2)))


def test_bandpass_frequency_response():
    assert _amplitude_ratio(10.0) == pytest.approx(1.0, abs=0.02)
    assert 20 * np.log10(_amplitude_ratio(0.1)) < -20
    assert 20 * np.log10(_amplitude_ratio(100.0)) < -20
    assert leads.bandpass(np.zeros((2, 3, 5000))).dtype == np.float32


def test_to_3by4_filtered_equals_bandpass_of_unfiltered_and_batch_equals_single():
    batch = np.stack([make_raw(s) for s in range(3)])
    filt = leads.to_3by4(batch)
    assert filt.shape == (3, 3, 5000) and filt.dtype == np.float32
    np.testing.assert_allclose(
        filt, leads.bandpass(leads.to_3by4(batch, apply_filter=False)), atol=1e-6
    )
    for i in range(3):
        np.testing.assert_allclose(leads.to_3by4(batch[i]), filt[i], atol=1e-6)
    assert np.isfinite(filt).all()


def test_to_3by4_rejects_wrong_shape():
    with pytest.raises(WaveformError, match="expected") as info:
        leads.to_3by4(np.zeros((12, 5000)))
    assert info.value.reason == "wrong_shape"


def test_short_lead_modes_equal_full_row_modes_with_and_without_stray_samples():
    rng = np.random.default_rng(4)
    raw = np.full((5, 15, 5000), np.nan, dtype=np.float32)
    for j in range(12):
        w = leads.lead_window(j)
        raw[:, j, w] = np.round(rng.normal(0.2 * j, 0.3, (5, 1250)), 2)
    raw[1, 4, 10:3000] = 7.0  # finite samples outside lead 4's window: full-row mode is 7.0
    raw[2, 0, :] = np.nan  # an empty lead: mode 0
    short = raw[:, :12]
    got = leads.short_lead_modes(short)
    np.testing.assert_array_equal(got, leads.lead_modes(short))
    assert got[1, 4] == pytest.approx(7.0) and got[2, 0] == 0.0


def test_decode_oversized_member_reports_shape_without_inflating_it():
    data = npz_bytes(np.zeros((15, 50_000), np.float64), compressed=True)
    with pytest.raises(WaveformError, match=r"\(15, 50000\)") as info:
        leads.decode_npz(data, "f")
    assert info.value.reason == "wrong_shape"


def test_decode_float32_member_is_a_view_and_float64_is_cast():
    raw = make_raw()
    out = leads.decode_npz(npz_bytes(raw, compressed=True), "f")
    assert out.dtype == np.float32 and out.base is not None and not out.flags.owndata
    out64 = leads.decode_npz(npz_bytes(raw.astype(np.float64)), "f")
    assert out64.dtype == np.float32 and out64.flags.owndata
    np.testing.assert_array_equal(out, out64)


@pytest.mark.parametrize("case", ["bit_flip", "truncated"])
def test_decode_without_libdeflate_uses_zlib_with_the_same_results(monkeypatch, case):
    raw = make_raw()
    data = npz_bytes(raw, compressed=True)
    with_lib = leads.decode_npz(data, "f")
    bad, reason = _bad_cases()[case]
    monkeypatch.setattr(leads, "_libdeflate", None)
    np.testing.assert_array_equal(leads.decode_npz(data, "f"), with_lib)
    with pytest.raises(WaveformError) as info:
        leads.decode_npz(bad, "f")
    assert info.value.reason == reason


def test_decode_compressed_bit_flip_is_corrupt_with_libdeflate():
    data = bytearray(npz_bytes(make_raw(), compressed=True))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.infolist()[0]
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len  # the member's deflate stream
    for offset in (start + 10, start + info.compress_size // 2, start + info.compress_size - 3):
        bad = bytearray(data)
        bad[offset] ^= 0x55
        with pytest.raises(WaveformError) as err:
            leads.decode_npz(bytes(bad), "f")
        assert err.value.reason == "corrupt_npz", offset


def _reference_3by4(raw: np.ndarray) -> np.ndarray:
    """docs/data-contract.md §3 written out per lead, unfiltered (float64)."""
    short = raw[:12].astype(np.float64)
    for j in range(12):
        valid = short[j][np.isfinite(short[j])]
        if valid.size:
            short[j] -= stats.mode(np.round(valid, 2), keepdims=True)[0][0]
    short = np.nan_to_num(short)
    return np.stack([short[i] + short[i + 3] + short[i + 6] + short[i + 9] for i in range(3)])


def test_to_3by4_window_fast_path_and_stray_samples_match_the_reference():
    rng = np.random.default_rng(9)
    batch = np.stack([make_raw(s) for s in range(4)])
    batch[:, :12] = np.round(batch[:, :12], 2)
    batch[1, 2, 4000:4100] = 0.5  # lead III with samples outside its window
    batch[3, 7, :] = np.nan  # an empty lead
    batch[2, 0, rng.integers(0, 1250, 50)] = np.nan  # gaps inside a window
    got = leads.to_3by4(batch, apply_filter=False)
    for i in range(len(batch)):
        np.testing.assert_allclose(got[i], _reference_3by4(batch[i]), atol=1e-5)


def test_lead_modes_ragged_ranges_gaps_and_empty_rows_match_scipy():
    rng = np.random.default_rng(12)
    x = np.round(rng.normal(0, 0.3, (40, 1250)), 2).astype(np.float32)
    x[3] += 25.0  # a far offset
    x[5, :10] = 40.0  # a wide range in one row
    x[7, rng.integers(0, 1250, 600)] = np.nan
    x[9] = np.nan  # empty: mode 0
    x[11, :5] = np.inf  # infinite samples count as missing
    got = leads.lead_modes(x, 0.01)
    for i, row in enumerate(x):
        valid = row[np.isfinite(row)]
        want = stats.mode(np.rint(valid / np.float32(0.01)), keepdims=True)[0][0] * 0.01 \
            if valid.size else 0.0
        assert got[i] == pytest.approx(want, abs=1e-6), i
