"""Lead layout of the ``ed-bwh-ecg`` 500 Hz waveforms, npz decoding and the "3by4" model input.

A waveform file holds one float array of shape (15, 5000): rows 0-11 are the twelve short leads
(each valid only in the 2.5-s window the printed 3x4 page shows, NaN elsewhere), rows 12-14 the
10-s rhythm strips V1, II, V5 (docs/data-contract.md §1 and 3).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

try:  # libdeflate bindings; zlib (3x slower) where no wheel exists
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    _libdeflate = None

# Each ECG is one file, ``ecg-waveforms-npz/<first 2 hex digits>/<10 hex digits>.npz``.
NPZ_DIR = "ecg-waveforms-npz"
FS = 500
N_SAMPLES = 5000
WINDOW = 1250
N_ROWS = 15
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LONG_LEADS = ("V1", "II", "V5")
LONG_ROWS = (12, 13, 14)
SHAPE = (N_ROWS, N_SAMPLES)
# Quantisation step (mV) of the per-lead mode in `to_3by4`; None = exact values.
MODE_RESOLUTION = 0.01


class WaveformError(ValueError):
    """A waveform that cannot be used; ``reason`` is a machine-readable code.

    Codes: ``corrupt_npz``, ``empty_npz``, ``wrong_shape``, ``wrong_dtype``,
    ``all_leads_missing``, ``long_lead_missing``, ``non_finite`` (decoding); ``no_rpeaks``
    (reconstruction); ``corrupt_record``, ``missing_leads``, ``record_too_short`` (WFDB records).
    The message names the source and what was expected.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def lead_window(lead: int) -> slice:
    """Samples of the printed 2.5-s window of short lead ``lead`` (0-11)."""
    start = (lead // 3) * WINDOW
    return slice(start, start + WINDOW)


_NPY_HEADER_MAX = 1 << 16
_MAX_MEMBER = N_ROWS * N_SAMPLES * 8 + _NPY_HEADER_MAX
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra length


def _member_payload(archive: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes) -> bytes:
    """The uncompressed bytes of one archive member, CRC-checked.

    Stored and deflated members are inflated in one call from the archive's bytes (zipfile's
    streaming reader costs as much again as the inflate itself), by libdeflate (the
    ``deflate`` package; about 3x zlib's speed, CRC included) or zlib where it is missing;
    anything else goes through zipfile. A member larger than a float64 waveform is not
    inflated: only its first bytes (the .npy header, enough to report its shape) are returned.
    Raises ``zipfile.BadZipFile`` or ``zlib.error`` on a damaged member.
    """
    if info.file_size > _MAX_MEMBER:
        with archive.open(info) as fh:
            return fh.read(_NPY_HEADER_MAX)
    if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED,
                                                          zipfile.ZIP_DEFLATED):
        with archive.open(info) as fh:
            return fh.read()
    off = info.header_offset
    sig, name_len, extra_len = _LOCAL_HEADER.unpack_from(data, off)
    if sig != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for member {info.filename!r}")
    start = off + _LOCAL_HEADER.size + name_len + extra_len
    body = data[start:start + info.compress_size]
    if len(body) != info.compress_size:
        raise zipfile.BadZipFile(f"member {info.filename!r} is truncated")
    if info.compress_type == zipfile.ZIP_STORED:
        payload = body
    elif _libdeflate is not None:
        try:
            payload = _libdeflate.deflate_decompress(body, info.file_size)
        except _libdeflate.DeflateError as exc:
            raise zipfile.BadZipFile(f"member {info.filename!r}: {exc}") from exc
    else:
        payload = zlib.decompress(body, -zlib.MAX_WBITS, max(info.file_size, 1))
    crc = _libdeflate.crc32(payload) if _libdeflate is not None else zlib.crc32(payload)
    if len(payload) != info.file_size or crc != info.CRC:
        raise zipfile.BadZipFile(f"bad CRC or size for member {info.filename!r}")
    return payload


def _header_end(payload: bytes) -> int:
    """Where the array data of a ``.npy`` byte string starts (its header's end)."""
    if len(payload) < 10 or payload[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy array (bad magic string)")
    if payload[6] == 1:
        return 10 + int.from_bytes(payload[8:10], "little")
    if len(payload) < 12:
        raise ValueError("truncated .npy header")
    return 12 + int.from_bytes(payload[8:12], "little")


@lru_cache(maxsize=64)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of a ``.npy`` header, parsed by numpy.

    Cached: every waveform file carries the same few headers, and parsing one (a Python
    literal) costs a tenth of inflating the array.
    """
    fh = io.BytesIO(header)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(shape), bool(fortran), dtype, fh.tell()


def _first_member(data: bytes, source: str) -> np.ndarray:
    """The first ``.npy`` array stored in the zip archive ``data``, dtype and shape checked.

    The array is a view of the inflated bytes (no copy). A member too large for a waveform is
    not inflated (see `_member_payload`).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise WaveformError(
            "corrupt_npz", f"{source}: not a readable npz archive ({exc}); expected a zip of .npy"
        ) from exc
    with archive:
        members = [i for i in archive.infolist() if not i.is_dir()]
        if not members:
            raise WaveformError("empty_npz", f"{source}: npz archive holds no array")
        info = members[0]
        name = info.filename
        try:
            payload = _member_payload(archive, info, data)
            shape, fortran, dtype, offset = _npy_header(bytes(payload[:_header_end(payload)]))
        except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError,
                struct.error) as exc:
            raise WaveformError(
                "corrupt_npz", f"{source}: array {name!r} cannot be read ({exc})"
            ) from exc
    if dtype.hasobject or dtype.kind not in "iuf":
        raise WaveformError(
            "wrong_dtype",
            f"{source}: array {name!r} has dtype {dtype}; expected a numeric "
            "(integer or float) array",
        )
    if tuple(shape) != SHAPE:
        raise WaveformError(
            "wrong_shape",
            f"{source}: array {name!r} has shape {tuple(shape)}; expected {SHAPE}",
        )
    count = int(np.prod(shape))
    if len(payload) - offset < count * dtype.itemsize:
        raise WaveformError(
            "corrupt_npz",
            f"{source}: array {name!r} is truncated "
            f"({len(payload) - offset} of {count * dtype.itemsize} bytes)",
        )
    arr = np.frombuffer(payload, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def decode_npz(data: bytes, source: str) -> np.ndarray:
    """Decode and validate one npz waveform file -> float32 (15, 5000).

    The first array in the archive is used whatever its name. NaN marks missing samples and is
    kept; raises `WaveformError` for a corrupt or truncated archive, a wrong shape or dtype,
    every short lead missing, a long strip entirely missing, or an infinite value. A float32
    C-ordered member is returned without a copy (a view of the inflated bytes, which may be
    read-only).
    """
    x = _first_member(data, source).astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if np.isinf(x).any():
        rows = sorted({int(r) for r in np.nonzero(np.isinf(x))[0]})
        raise WaveformError(
            "non_finite", f"{source}: +/-inf in rows {rows}; expected finite values or NaN"
        )
    if not finite[:12].any():
        raise WaveformError("all_leads_missing", f"{source}: every short lead (rows 0-11) is NaN")
    for row, lead in zip(LONG_ROWS, LONG_LEADS, strict=True):
        if not finite[row].any():
            raise WaveformError(
                "long_lead_missing",
                f"{source}: long lead {lead} (row {row}) is entirely NaN; expected a 10-s strip",
            )
    return x


def valid_mask(raw: np.ndarray) -> np.ndarray:
    """Finite samples of the twelve short leads: (..., 15, 5000) -> (..., 12, 5000) bool."""
    return np.isfinite(raw[..., :12, :])


def lead_modes(leads: np.ndarray, resolution: float | None = MODE_RESOLUTION) -> np.ndarray:
    """Most frequent value of each row over its finite samples: (..., L) -> (...) float32.

    Values are first rounded to multiples of ``resolution`` (mV; None = exact values), so the
    mode of a continuous signal is its most populated ``resolution``-wide level. Ties go to the
    smallest value (as ``scipy.stats.mode``); a row without finite samples has mode 0.
    Vectorised over the batch: one ``bincount`` of the quantised levels (a sort-based run-length
    mode for exact values or an extreme value range).
    """
    x = np.asarray(leads)
    flat = x.reshape(-1, x.shape[-1])
    if resolution is None:
        mode = _sorted_mode(np.where(np.isfinite(flat), flat, np.inf).astype(np.float64))
    else:
        q = flat / resolution
        np.rint(q, out=q)
        mode = _bincount_modes(q)
        if mode is None:  # value range too wide for counting
            mode = _sorted_mode(np.where(np.isfinite(q), q, np.inf))
        mode = mode * resolution
    mode = np.where(np.isfinite(mode), mode, 0.0)
    return mode.astype(np.float32).reshape(x.shape[:-1])


_BINCOUNT_LIMIT = 1 << 22


def _bincount_modes(q: np.ndarray) -> np.ndarray | None:
    """Mode of each row of integer-valued ``q`` (non-finite = missing) by one ``bincount``.

    Each row counts into its own run of bins, as long as its value range; the most populated
    bin of each run is found with one ``maximum.reduceat`` over (count, -level) packed into an
    integer. Ties -> smallest level; an empty row -> 0. None when the bins would exceed
    ``_BINCOUNT_LIMIT``.
    """
    rows = q.shape[0]
    finite = np.isfinite(q)
    lo = np.min(q, axis=1, where=finite, initial=np.inf)
    hi = np.max(q, axis=1, where=finite, initial=-np.inf)
    has = np.isfinite(lo)
    lo = np.where(has, lo, 0.0)
    spans = np.where(has, hi - lo + 1, 1).astype(np.int64)
    total = int(spans.sum())
    if total > _BINCOUNT_LIMIT:
        return None
    starts = np.zeros(rows, dtype=np.int64)
    np.cumsum(spans[:-1], out=starts[1:])
    keys = (q + (starts - lo)[:, None].astype(q.dtype))[finite].astype(np.int64)
    counts = np.bincount(keys, minlength=total)
    widest = int(spans.max())
    local = np.arange(total) - np.repeat(starts, spans)
    best = np.maximum.reduceat(counts * (widest + 1) + (widest - local), starts)
    level = widest - best % (widest + 1)  # first maximum = smallest level among ties
    return np.where(best // (widest + 1) > 0, lo + level, 0.0)


def _sorted_mode(keys: np.ndarray) -> np.ndarray:
    """Mode of each row (missing = +inf) by sorting and run lengths; ties -> smallest value."""
    keys = np.sort(keys, axis=1)
    idx = np.arange(keys.shape[1])
    new_run = np.ones_like(keys, dtype=bool)
    new_run[:, 1:] = keys[:, 1:] != keys[:, :-1]
    run_start = np.maximum.accumulate(np.where(new_run, idx, 0), axis=1)
    length = idx - run_start
    length[~np.isfinite(keys)] = -1  # missing samples never win
    best = np.argmax(length, axis=1)  # first maximum = smallest value among ties
    return keys[np.arange(keys.shape[0]), best]


@lru_cache(maxsize=16)
def _sos(fs: int, low: float, high: float, order: int) -> np.ndarray:
    # scipy.signal is imported where it is used: it costs 0.7 s, and every process that loads
    # the Dagster definitions imports this module (for NPZ_DIR) without filtering anything
    from scipy import signal

    return signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")


def bandpass(
    x: np.ndarray, fs: int = FS, low: float = 0.5, high: float = 50.0, order: int = 5
) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis (sosfiltfilt) -> float32."""
    from scipy import signal

    y = signal.sosfiltfilt(_sos(int(fs), float(low), float(high), int(order)), x, axis=-1)
    return y.astype(np.float32, copy=False)


def _windows(short: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each short lead's printed window (N, 12, 1250) float32, and which leads (N, 12) also
    have finite samples outside it. ``short``: N arrays (or an array) of 12+ rows x 5000."""
    n = len(short)
    win = np.empty((n, 12, WINDOW), dtype=np.float32)
    finite_rows = np.empty((n, 12), dtype=np.int64)
    for i, ecg in enumerate(short):
        for q in range(4):  # leads 3q, 3q+1, 3q+2 share the printed window q
            win[i, 3 * q:3 * q + 3] = ecg[3 * q:3 * q + 3, lead_window(3 * q)]
        finite_rows[i] = np.count_nonzero(np.isfinite(ecg[:12]), axis=-1)
    outside = finite_rows != np.count_nonzero(np.isfinite(win), axis=-1)
    return win, outside


def _window_modes(
    short: Sequence[np.ndarray], resolution: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(windows (N, 12, 1250), modes (N, 12), indices of the ECGs with samples outside a
    window, their full short rows (k, 12, 5000) float32).

    Modes are counted over each printed window; a lead with finite samples outside its window
    is recounted over its full row (only those leads).
    """
    win, outside = _windows(short)
    modes = lead_modes(win, resolution)
    idx = np.flatnonzero(outside.any(axis=1))
    rows = np.empty((0, 12, N_SAMPLES), dtype=np.float32)
    if idx.size:
        rows = np.stack([np.asarray(short[i][:12], dtype=np.float32) for i in idx])
        sel = outside[idx]
        fixed = modes[idx]
        fixed[sel] = lead_modes(rows[sel], resolution)
        modes[idx] = fixed
    return win, modes, idx, rows


def short_lead_modes(
    short: np.ndarray, resolution: float | None = MODE_RESOLUTION
) -> np.ndarray:
    """`lead_modes` of the twelve short leads (N, 12, 5000), looking at their printed windows.

    A short lead is valid only inside its 2.5-s window, so the mode is taken over that window
    (a quarter of the samples); leads with finite samples outside it fall back to the full row.
    Equal to ``lead_modes(short)`` in every case.
    """
    return _window_modes(short, resolution)[1]


def to_3by4(
    raw: np.ndarray | Sequence[np.ndarray],
    apply_filter: bool = True,
    mode_resolution: float | None = MODE_RESOLUTION,
) -> np.ndarray:
    """The "3by4" input: (N, 15, 5000) or (15, 5000) -> (N, 3, 5000) or (3, 5000) float32.

    ``raw`` may also be a list of N (15, 5000) arrays (no need to stack them first). Per short
    lead subtract its mode over the valid samples (`lead_modes`), set NaN to 0, row i = leads
    i + i+3 + i+6 + i+9 (row 0 = I | aVR | V1 | V4 end to end), then the 0.5-50 Hz zero-phase
    band-pass (`bandpass`) unless ``apply_filter`` is False.
    """
    if isinstance(raw, list | tuple):
        bad = [np.shape(r) for r in raw if np.shape(r) != SHAPE]
        if bad:
            raise WaveformError(
                "wrong_shape", f"to_3by4: got arrays of shape {bad[0]}; expected {SHAPE}"
            )
        single, batch = False, raw
    else:
        arr = np.asarray(raw)
        single = arr.ndim == 2
        batch = arr[None] if single else arr
        if batch.ndim != 3 or batch.shape[1:] != SHAPE:
            raise WaveformError(
                "wrong_shape", f"to_3by4: got shape {np.shape(raw)}; expected (N, 15, 5000)"
            )
    n = len(batch)
    win, modes, idx, rows = _window_modes(batch, mode_resolution)
    # Lead j = 3q + i lies only in window q of row i: row i is its four windows end to end.
    win -= modes[..., None]
    np.nan_to_num(win, copy=False, nan=0.0)
    out = win.reshape(n, 4, 3, WINDOW).transpose(0, 2, 1, 3).reshape(n, 3, N_SAMPLES)
    if idx.size:  # leads with samples outside their window: sum the full rows
        rows -= modes[idx][..., None]
        np.nan_to_num(rows, copy=False, nan=0.0)
        out[idx] = rows.reshape(-1, 4, 3, N_SAMPLES).sum(axis=1)
    if apply_filter:
        out = bandpass(out)
    return out[0] if single else out
