"""The stored form of a teacher answer's top-K log-probs in the teacher cache: at most 6 bytes per kept logit
before compression, about 4-5 after (bench/logit_store.py).

Layout: the magic `DFT2`, then zlib of (little-endian) the sample count (uint32) and, per sample:
  positions P (uint32), K (uint16), kind (uint8: 1 ids, 2 token strings)
  log-probs: float16 [P * K] (-inf marks an empty slot)
  ids:       uint32 [P * K] (the teacher vocabulary's ids; 2**32 - 1 for none), or for token strings
  strings:   uint32 byte length + a JSON list of the distinct strings, then uint16 (or uint32 past 65,535 strings)
             indices [P * K] into it (an API's pieces repeat: the table costs little per logit)
Written by hand rather than with numpy's npz: the form before (a compressed npz, a zip archive starting with
`PK`) spends a zip container per answer (file headers and a directory for 2-4 arrays), which a short answer's
log-probs do not amortise. It stays readable, so answers already paid for are kept.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np

from distilflow.teachers.base import TopLogprobs

MAGIC = b"DFT2"
_IDS, _TOKENS = 1, 2
_NONE = np.uint32(2**32 - 1)


def pack(samples: list[TopLogprobs]) -> bytes:
    out = [struct.pack("<I", len(samples))]
    for sample in samples:
        values = np.asarray(sample.logprobs, dtype=np.float16)
        positions, k = (values.shape if values.ndim == 2 else (len(sample.logprobs), 0))
        kind = _IDS if sample.token_ids is not None else _TOKENS
        out += [struct.pack("<IHB", positions, k, kind), values.astype("<f2").tobytes()]
        if kind == _IDS:
            ids = np.asarray(sample.token_ids, dtype=np.int64).reshape(positions, k)
            out.append(np.where(ids < 0, _NONE, ids).astype("<u4").tobytes())
            continue
        tokens = [t for row in (sample.tokens or []) for t in row]
        table = list(dict.fromkeys(tokens))
        where = {t: i for i, t in enumerate(table)}
        text = json.dumps(table, ensure_ascii=False).encode()
        index_type = "<u2" if len(table) < 2**16 else "<u4"
        out += [struct.pack("<I", len(text)), text,
                np.asarray([where[t] for t in tokens], dtype=index_type).tobytes()]
    return MAGIC + zlib.compress(b"".join(out), 6)


def unpack(blob: bytes) -> list[TopLogprobs]:
    if not blob.startswith(MAGIC):
        return _unpack_npz(blob)
    blob = zlib.decompress(blob[len(MAGIC):])
    (count,), at = struct.unpack_from("<I", blob, 0), 4
    samples = []
    for _ in range(count):
        positions, k, kind = struct.unpack_from("<IHB", blob, at)
        at += 7
        n = positions * k
        values = np.frombuffer(blob, dtype="<f2", count=n, offset=at).astype(np.float32).reshape(positions, k)
        at += 2 * n
        if kind == _IDS:
            raw = np.frombuffer(blob, dtype="<u4", count=n, offset=at).astype(np.int64).reshape(positions, k)
            at += 4 * n
            samples.append(TopLogprobs(logprobs=values.tolist(), token_ids=np.where(raw == _NONE, -1, raw).tolist()))
            continue
        (length,) = struct.unpack_from("<I", blob, at)
        table = json.loads(blob[at + 4:at + 4 + length].decode())
        at += 4 + length
        index_type = "<u2" if len(table) < 2**16 else "<u4"
        index = np.frombuffer(blob, dtype=index_type, count=n, offset=at)
        at += index.itemsize * n
        tokens = [table[i] for i in index.tolist()]
        samples.append(TopLogprobs(logprobs=values.tolist(),
                                   tokens=[tokens[p * k:(p + 1) * k] for p in range(positions)]))
    return samples


def pack_npz(samples: list[TopLogprobs]) -> bytes:
    """The form before DFT2 (float16 log-probs, int32 ids, token strings as JSON, in a compressed npz): kept to read
    old caches and to measure against (bench/logit_store.py)."""
    arrays: dict[str, np.ndarray] = {}
    for i, sample in enumerate(samples):
        arrays[f"lp{i}"] = np.asarray(sample.logprobs, dtype=np.float16)
        if sample.token_ids is not None:
            arrays[f"id{i}"] = np.asarray(sample.token_ids, dtype=np.int32)
        if sample.tokens is not None:
            arrays[f"tok{i}"] = np.frombuffer(json.dumps(sample.tokens).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, n=np.asarray(len(samples)), **arrays)
    return buffer.getvalue()


def _unpack_npz(blob: bytes) -> list[TopLogprobs]:
    data = np.load(io.BytesIO(blob))
    samples = []
    for i in range(int(data["n"])):
        tokens = json.loads(data[f"tok{i}"].tobytes().decode()) if f"tok{i}" in data else None
        samples.append(TopLogprobs(
            logprobs=data[f"lp{i}"].astype(np.float32).tolist(),
            token_ids=data[f"id{i}"].tolist() if f"id{i}" in data else None,
            tokens=tokens,
        ))
    return samples
