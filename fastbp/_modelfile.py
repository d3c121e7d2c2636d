"""The model file of :meth:`fastbp.MLP.save` and :meth:`fastbp.MLP.load`: a .npz archive.

Writing is atomic (a temporary file renamed over the destination).  Reading treats the file
as untrusted input: its description and the shape and dtype of its parameters are checked
against each other, and the memory they need against what is available, before anything sized
by the file is allocated; every read is bounded by the sizes the description implies, and the
archive's checksums are verified.
"""

from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np

from ._resources import check_fits
from ._validation import all_finite, check_activations, check_dtype, check_loss, check_sizes
from .layout import n_params

__all__ = ["FILE_FORMAT", "FILE_VERSION", "INITS", "ModelFileError", "read_model_file", "write_model_file"]

#: The initialisations a model may be made with (and that a file may name).
INITS = ("xavier", "he")
FILE_FORMAT = "fastbp-mlp"
FILE_VERSION = 1


def write_model_file(path: str, entries: dict) -> None:
    """Write ``entries`` (name -> array) with the format and version to ``path``, atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, format=np.array(FILE_FORMAT), version=np.array(FILE_VERSION), **entries)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


#: Entries of a model file: name -> (expected kind of dtype, number of dimensions).
_ENTRIES = {
    "format": ("U", 0),
    "version": ("iu", 0),
    "sizes": ("iu", 1),
    "activations": ("U", 1),
    "loss": ("U", 0),
    "dtype": ("U", 0),
    "init": ("U", 0),
    "params": ("f", 1),
}
_OPTIONAL = {"init"}
_MAX_LAYERS = 10_000
_MAX_SMALL_ENTRY = 1 << 20


class ModelFileError(Exception):
    """A model file that is damaged or not a model file (the message completes 'path: ... ')."""


def _entry_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    """(shape, dtype, header length) of one .npy entry, from its header alone."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ModelFileError(f"has an entry {info.filename!r} of unsupported .npy version {version}")
        return shape, dtype, f.tell(), fortran


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, shape, dtype, header_len: int) -> np.ndarray:
    """The array of one entry, reading exactly the bytes its checked header implies (checksum verified)."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    nbytes = count * dtype.itemsize
    if info.file_size != header_len + nbytes:
        raise ModelFileError(
            f"is damaged: entry {info.filename!r} has {info.file_size} bytes, its header implies {header_len + nbytes}"
        )
    out = np.empty(count, dtype=dtype)
    view = memoryview(out).cast("B")
    with zf.open(info) as f:
        f.read(header_len)
        pos = 0
        while pos < nbytes:
            chunk = f.read(min(nbytes - pos, 1 << 24))
            if not chunk:
                raise ModelFileError(f"is damaged: entry {info.filename!r} ends early")
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        if f.read(1):  # also makes zipfile check the CRC-32 of the whole entry
            raise ModelFileError(f"is damaged: entry {info.filename!r} is longer than its header implies")
    return out.reshape(shape)


def read_model_file(fh):
    """((sizes, activations, loss, dtype, init), params) of an open model file; checks everything first."""
    try:
        zf = zipfile.ZipFile(fh)
    except zipfile.BadZipFile:
        raise ModelFileError("is not a readable fastbp model file (truncated, damaged, or not a .npz archive)") \
            from None
    with zf:
        infos = {}
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name not in _ENTRIES or name in infos:
                raise ModelFileError(f"is not a fastbp model file (unexpected entry {info.filename!r})")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ModelFileError(f"has an entry {info.filename!r} in an unsupported compression")
            infos[name] = info
        missing = [k for k in _ENTRIES if k not in infos and k not in _OPTIONAL]
        if missing:
            raise ModelFileError(f"is a damaged fastbp model file (missing entries: {', '.join(missing)})")
        headers = {}
        for name, info in infos.items():
            shape, dtype, header_len, fortran = _entry_header(zf, info)
            kinds, ndim = _ENTRIES[name]
            if dtype.kind not in kinds or len(shape) != ndim or dtype.hasobject:
                raise ModelFileError(f"is damaged: entry {name!r} has dtype {dtype} and shape {shape}")
            if fortran and ndim > 1:
                raise ModelFileError(f"is damaged: entry {name!r} is Fortran-ordered")
            if name != "params" and info.file_size > _MAX_SMALL_ENTRY:
                raise ModelFileError(f"is damaged: entry {name!r} is {info.file_size} bytes long")
            headers[name] = (info, shape, dtype, header_len)

        def small(name):
            info, shape, dtype, header_len = headers[name]
            return _read_entry(zf, info, shape, dtype, header_len)

        if str(small("format")) != FILE_FORMAT:
            raise ModelFileError("is not a fastbp model file")
        version = int(small("version"))
        if version != FILE_VERSION:
            raise ModelFileError(f"has unsupported format version {version} (this fastbp reads {FILE_VERSION})")
        if not 2 <= headers["sizes"][1][0] <= _MAX_LAYERS + 1:
            raise ModelFileError(f"holds an invalid model description (sizes of length {headers['sizes'][1][0]})")
        try:
            sizes = check_sizes([int(v) for v in small("sizes")])
            activations = check_activations([str(v) for v in small("activations")], len(sizes) - 1)
            loss = check_loss(str(small("loss")), activations[-1])
            dtype = check_dtype(str(small("dtype")))
            init = str(small("init")) if "init" in headers else "xavier"
            if init not in INITS:
                raise ValueError(f"init: unknown initialisation {init!r}")
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"holds an invalid model description ({e})") from None
        info, shape, pdtype, header_len = headers["params"]
        P = n_params(sizes)
        if pdtype.newbyteorder("=") != dtype or shape != (P,):
            raise ModelFileError(
                f"holds params of dtype {pdtype} and shape {shape}; its description {list(sizes)} in "
                f"{dtype.name} implies {dtype.name} and ({P},)"
            )
        check_fits(f"sizes: the {P:,} parameters of a network {list(sizes)} in {dtype.name}", P * dtype.itemsize)
        params = _read_entry(zf, info, shape, pdtype, header_len)
    params = params.astype(dtype, copy=False)  # native byte order
    if not all_finite(params):
        raise ModelFileError("holds non-finite parameters")
    return (sizes, activations, loss, dtype, init), params
