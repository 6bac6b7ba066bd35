"""R-peak detection and the 10-s 12-lead reconstruction from the printed 3x4 layout.

The reconstruction (docs/data-contract.md §3) puts, for every short lead, its Hann-tapered median
beat at every R-peak of the long lead II, then overwrites V1, II and V5 with the real strips.
"""

from __future__ import annotations

import statistics

import numpy as np

from acs_pipeline.ecg.leads import FS, N_SAMPLES, SHAPE, WaveformError, bandpass, lead_modes

# Beat window around an R-peak: 0.3 s before, 0.5 s after (400 samples at 500 Hz), so that the
# P wave and the T wave of a normal beat fall inside it.
PRE_S = 0.3
POST_S = 0.5
# Hamilton & Tompkins (1986) detection-threshold coefficient and timing rules.
_TH = 0.3125
_REFRACTORY_S = 0.2
_TWAVE_S = 0.36
_REGION_S = 0.15
_LEAD_II_ROW = 13
_LONG_TARGETS = {6: 12, 1: 13, 10: 14}  # output lead V1, II, V5 <- input rows 12, 13, 14


def _fill_nan(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN samples along the last axis (edges held); all-NaN -> 0."""
    x = np.array(x, dtype=np.float64)
    rows = x.reshape(-1, x.shape[-1])
    for row in rows:
        bad = ~np.isfinite(row)
        if bad.all():
            row[:] = 0.0
        elif bad.any():
            pos = np.arange(row.size)
            row[bad] = np.interp(pos[bad], pos[~bad], row[~bad])
    return x


def _qrs_feature(x: np.ndarray, fs: int) -> tuple[np.ndarray, np.ndarray]:
    """Hamilton QRS feature along the last axis: 8-16 Hz band-pass, |derivative|, 80-ms
    moving average (all zero-phase / centred, so feature peaks line up with the QRS).
    Returns (feature, slope) where slope is the |derivative|."""
    from scipy import signal  # imported where used: see ecg/leads.py _sos

    sos = signal.butter(2, [8.0, 16.0], btype="bandpass", fs=fs, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)
    band = signal.sosfiltfilt(sos, x, axis=-1, padlen=padlen)
    slope = np.abs(np.gradient(band, axis=-1))
    width = max(1, int(round(0.08 * fs)))
    feature = signal.oaconvolve(
        slope, np.full((1,) * (x.ndim - 1) + (width,), 1.0 / width), mode="same", axes=-1
    )
    return feature, slope


def _median8(buf: list[float]) -> float:
    return statistics.median(buf[-8:])


def _hamilton_rules(feature: np.ndarray, slope: np.ndarray, fs: int) -> np.ndarray:
    """Adaptive-threshold decision rules of Hamilton & Tompkins on the feature peaks."""
    from scipy import signal  # imported where used: see ecg/leads.py _sos

    refractory = max(1, int(round(_REFRACTORY_S * fs)))
    # Rule 1: ignore peaks within 200 ms of a larger one; also drop ripples on the plateau of a
    # wide (fragmented) QRS: a peak must rise by half its height above the valley to a larger one.
    cands, props = signal.find_peaks(feature, distance=refractory, prominence=0.0)
    cands = cands[props["prominences"] >= 0.5 * feature[cands]]
    if cands.size == 0:
        return cands
    heights = feature[cands]
    half = max(1, int(round(0.04 * fs)))
    max_slope = np.array([slope[max(0, c - half) : c + half + 1].max() for c in cands])
    # Initial levels: per-second maxima of the first 8 s for the QRS level, zero noise.
    sec = max(1, min(8, feature.size // fs))
    qrs_buf = [float(feature[i * fs : (i + 1) * fs].max()) for i in range(sec)]
    noise_buf = [0.0]
    qrs: list[int] = []  # indices into cands
    noise: list[int] = []
    twave = int(round(_TWAVE_S * fs))

    def search_back(now: int, thr: float) -> None:
        """Rule 5: no QRS for 1.5 mean RR -> the largest noise peak above thr / 2 (at least
        360 ms after the last QRS) becomes a QRS."""
        if len(qrs) < 2:
            return
        last = cands[qrs[-1]]
        recent = cands[qrs[-9:]]
        rr = (recent[-1] - recent[0]) / (len(recent) - 1)  # mean of the last 8 RR
        if now - last <= 1.5 * rr:
            return
        back = [j for j in noise if last + twave < cands[j] < now and heights[j] > 0.5 * thr]
        if back:
            j = max(back, key=lambda i: heights[i])
            noise.remove(j)
            qrs.append(j)
            qrs.sort()
            qrs_buf.append(float(heights[j]))

    for k, c in enumerate(cands):
        nl, ql = _median8(noise_buf), _median8(qrs_buf)
        thr = nl + _TH * (ql - nl)
        search_back(int(c), thr)
        is_qrs = heights[k] > thr
        # Rule 3: within 360 ms of the last QRS with less than half its slope -> T wave.
        if (
            is_qrs
            and qrs
            and c - cands[qrs[-1]] < twave
            and max_slope[k] < 0.5 * max_slope[qrs[-1]]
        ):
            is_qrs = False
        if is_qrs:
            qrs.append(k)
            qrs_buf.append(float(heights[k]))
        else:
            noise.append(k)
            noise_buf.append(float(heights[k]))
    nl, ql = _median8(noise_buf), _median8(qrs_buf)
    search_back(feature.size, nl + _TH * (ql - nl))
    return cands[np.array(sorted(qrs), dtype=int)]


def _refine(x: np.ndarray, feature: np.ndarray, peaks: np.ndarray, fs: int) -> np.ndarray:
    """Move each detection to the extreme of the signal within its QRS region.

    The region is the run of samples around the feature peak where the feature stays above half
    the peak (at most +-150 ms; a fragmented QRS gives a rippled plateau, not one sharp peak).
    The extreme is the local maximum of ``polarity * x`` with one polarity per record, chosen by
    the larger median deflection, so that a negative-dominant lead (QS pattern) is aligned on
    its nadir consistently from beat to beat."""
    if peaks.size == 0:
        return peaks
    w = max(1, int(round(_REGION_S * fs)))
    idx = np.clip(peaks[:, None] + np.arange(-w, w + 1), 0, x.size - 1)
    above = feature[idx] >= 0.5 * feature[peaks][:, None]
    # Keep only the run of `above` samples that contains the peak (column w).
    left = np.cumprod(above[:, w::-1], axis=1)[:, ::-1]
    right = np.cumprod(above[:, w:], axis=1)[:, 1:]
    region = np.concatenate([left, right], axis=1).astype(bool)
    seg = x[idx]
    base = np.median(x)
    hi = np.where(region, seg, -np.inf).max(axis=1) - base
    lo = base - np.where(region, seg, np.inf).min(axis=1)
    polarity = 1.0 if np.median(hi) >= np.median(lo) else -1.0
    best = idx[np.arange(len(peaks)), np.argmax(np.where(region, polarity * seg, -np.inf), axis=1)]
    # An extreme on the first or last sample is the tail of a beat cut by the record edge.
    best = np.unique(best[(best > 0) & (best < x.size - 1)])
    # Two detections refined onto close samples: keep the stronger one.
    keep: list[int] = []
    refractory = int(round(_REFRACTORY_S * fs))
    for b in best:
        if keep and b - keep[-1] < refractory:
            if polarity * x[b] > polarity * x[keep[-1]]:
                keep[-1] = int(b)
        else:
            keep.append(int(b))
    return np.asarray(keep, dtype=np.int64)


def _detect_batch(leads_ii: np.ndarray, fs: int) -> list[np.ndarray]:
    x = _fill_nan(np.atleast_2d(leads_ii))
    if x.shape[-1] < fs // 2:
        return [np.zeros(0, dtype=np.int64) for _ in x]
    feature, slope = _qrs_feature(x, fs)
    clean = bandpass(x, fs=fs, low=0.5, high=min(45.0, 0.45 * fs), order=2)
    return [
        _refine(c, f, _hamilton_rules(f, s, fs), fs)
        for f, s, c in zip(feature, slope, clean, strict=True)
    ]


def detect_rpeaks(lead_ii: np.ndarray, fs: int = FS) -> np.ndarray:
    """Sample indices of the R-peaks of one lead (Hamilton-style QRS detector).

    8-16 Hz band-pass, |derivative|, 80-ms moving-average integration, the adaptive threshold of
    Hamilton & Tompkins (noise level + 0.3125 x (QRS level - noise level), medians of the last
    eight peaks) with a 200-ms refractory period, T-wave rejection and search-back, then each
    detection is refined to the local extreme of the 0.5-45 Hz signal (see `_refine`).
    NaN samples are interpolated. Returns int64 indices, sorted; empty if none.
    """
    x = np.asarray(lead_ii, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"detect_rpeaks: expected a 1-D signal, got shape {x.shape}")
    if not np.isfinite(x).any():
        return np.zeros(0, dtype=np.int64)
    return _detect_batch(x, fs)[0]


def _median_beats(short: np.ndarray, rpeaks: np.ndarray, pre: int, post: int) -> np.ndarray:
    """Median beat (12, pre + post) of each short lead over the R-peaks in its valid samples.

    Full windows (all samples valid) are used when a lead has at least one; otherwise the
    partial windows around its valid R-peaks, sample-wise NaN-median; samples no beat covers
    and leads with no R-peak in their valid samples are 0."""
    n = short.shape[-1]
    idx = rpeaks[:, None] + np.arange(-pre, post)
    inside = (idx >= 0) & (idx < n)
    seg = short[:, np.clip(idx, 0, n - 1)]  # (12, beats, window)
    seg[:, ~inside] = np.nan
    r_valid = np.isfinite(short[:, rpeaks])  # (12, beats)
    full = r_valid & np.isfinite(seg).all(axis=2)
    use = np.where(full.any(axis=1, keepdims=True), full, r_valid)
    seg[~use] = np.nan
    # NaN-median over the beats: sort (NaN last), average the middle valid element(s).
    seg.sort(axis=1)
    count = np.isfinite(seg).sum(axis=1, keepdims=True)  # (12, 1, window)
    lo = np.take_along_axis(seg, np.maximum(count - 1, 0) // 2, axis=1)
    hi = np.take_along_axis(seg, np.minimum(count // 2, seg.shape[1] - 1), axis=1)
    beats = np.where(count > 0, 0.5 * (lo + hi), 0.0)[:, 0]
    return np.nan_to_num(beats, nan=0.0)


def _reconstruct_one(
    raw: np.ndarray, modes: np.ndarray, rpeaks: np.ndarray, pre: int, post: int, taper: np.ndarray
) -> np.ndarray:
    short = raw[:12].astype(np.float64) - modes[:, None]
    beats = _median_beats(short, rpeaks, pre, post) * taper
    out = np.zeros((12, raw.shape[-1]), dtype=np.float64)
    n = raw.shape[-1]
    for r in rpeaks:
        a, b = r - pre, r + post
        out[:, max(a, 0) : min(b, n)] += beats[:, max(0, -a) : (pre + post) - max(0, b - n)]
    long = _fill_nan(raw[list(_LONG_TARGETS.values())])
    out[list(_LONG_TARGETS)] = long
    return out.astype(np.float32)


def reconstruct_12lead(
    raw: np.ndarray,
    fs: int = FS,
    pre_s: float = PRE_S,
    post_s: float = POST_S,
    taper_alpha: float = 1.0,
) -> np.ndarray:
    """10-s 12-lead reconstruction: (15, 5000) or (N, 15, 5000) -> (12, 5000) or (N, 12, 5000).

    R-peaks come from the long lead II (row 13). Each short lead, less its mode, gives a median
    beat over windows ``[r - pre_s, r + post_s)`` (default 0.3 s / 0.5 s = 400 samples) around
    the R-peaks inside its valid samples (see `_median_beats`); the beat is multiplied by a Hann
    window (``taper_alpha`` < 1: a Tukey window, flat middle and Hann edges) and added at every
    R-peak, clipped at the edges. V1, II and V5 are then the real long strips (rows 12-14, NaN
    gaps interpolated, baseline kept). Raises
    `WaveformError('no_rpeaks')` when lead II yields no R-peak.
    """
    from scipy import signal  # imported where used: see ecg/leads.py _sos

    arr = np.asarray(raw)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != SHAPE:
        raise WaveformError(
            "wrong_shape", f"reconstruct_12lead: got shape {np.shape(raw)}; expected {SHAPE}"
        )
    pre, post = int(round(pre_s * fs)), int(round(post_s * fs))
    taper = signal.windows.tukey(pre + post, taper_alpha)  # alpha 1 = np.hanning
    peaks = _detect_batch(arr[:, _LEAD_II_ROW], fs)
    out = np.empty((arr.shape[0], 12, N_SAMPLES), dtype=np.float32)
    modes = lead_modes(arr[:, :12])
    for i, (ecg, rp) in enumerate(zip(arr, peaks, strict=True)):
        if rp.size == 0:
            where = "" if single else f" (ECG {i} of the batch)"
            raise WaveformError(
                "no_rpeaks", f"reconstruct_12lead{where}: no R-peak found on long lead II (row 13)"
            )
        out[i] = _reconstruct_one(ecg, modes[i], rp, pre, post, taper)
    return out[0] if single else out
