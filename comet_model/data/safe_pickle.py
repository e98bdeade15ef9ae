"""Reading CMG's pickled feature arrays without running any code from the pickle.

CMG/DCID release every clip's features as a zip holding one ``.pkl``: a pickled NumPy array
(dcid_reference section 4). ``pickle.load`` on such a file calls whatever the pickle names
(``os.system``, ``open``, ...), so these files are read with :class:`ArrayUnpickler`, which
resolves only the handful of globals NumPy itself writes for a plain ``ndarray`` (protocols 2-5,
NumPy 1.x ``numpy.core`` and 2.x ``numpy._core`` names), each behind a wrapper that checks its
arguments. Anything else (another global, a persistent id, an object dtype, an out-of-band
buffer, an ``ndarray`` subclass) is refused before it can run, with one line naming the file.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import Any

import numpy as np

from .types import DataError

__all__ = ["ArrayUnpickler", "MAX_MEMBER_BYTES", "load_array", "load_zip_array"]

MAX_MEMBER_BYTES = 1 << 28  # 256 MiB: a CMG clip is 2 MiB; larger members are refused (zip bombs)

try:  # NumPy >= 2 keeps the implementations in numpy._core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.numeric import _frombuffer as _np_frombuffer


class _NDArrayToken:
    """Stands for ``numpy.ndarray`` inside a pickle: accepted by ``_reconstruct``, not callable."""

    __slots__ = ()


_NDARRAY = _NDArrayToken()


def _dtype(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(obj, str):
        raise pickle.UnpicklingError(f"dtype from {type(obj).__name__}, expected a type code")
    dt = np.dtype(obj, align=bool(align), copy=bool(copy))
    if dt.hasobject:
        raise pickle.UnpicklingError("object dtype refused")
    return dt


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape):
        raise pickle.UnpicklingError("array shape is not a tuple of sizes")
    return shape


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
    if not isinstance(dtype, bytes) or _shape(shape) != (0,):
        raise pickle.UnpicklingError("unexpected _reconstruct arguments")
    return _np_reconstruct(np.ndarray, shape, dtype)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError("unexpected _frombuffer arguments")
    if dtype.hasobject or order not in ("C", "F"):
        raise pickle.UnpicklingError("unexpected _frombuffer arguments")
    return _np_frombuffer(buf, dtype, _shape(shape), order)


def _encode(obj: Any, encoding: Any = "utf-8") -> bytes:
    # protocol 2 stores bytes as latin-1 text decoded again by _codecs.encode
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected _codecs.encode arguments")
    return obj.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    # protocol 2 writes an empty payload (an array with no elements) as bytes()
    if args:
        raise pickle.UnpicklingError("unexpected bytes() arguments")
    return b""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build NumPy arrays and plain Python values, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        """The checked stand-in of an allowed NumPy global; refuses every other global."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids could name anything: refused."""
        raise pickle.UnpicklingError("refused persistent id")


def load_array(data: bytes, source: str) -> np.ndarray:
    """The numeric ``ndarray`` pickled in ``data``; :class:`DataError` naming ``source`` else."""
    try:
        obj = ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{source}: unsafe or unreadable pickle ({_one_line(exc)})") from None
    except Exception as exc:  # anything the unpickler machinery raises on a malformed stream
        reason = f"{type(exc).__name__}: {_one_line(exc)}"
        raise DataError(f"{source}: unreadable pickle ({reason})") from None
    if type(obj) is not np.ndarray:
        raise DataError(f"{source}: the pickle holds a {type(obj).__name__}, not a numpy array")
    if obj.dtype.kind not in "biuf":
        raise DataError(f"{source}: the pickled array has dtype {obj.dtype}, expected numbers")
    return obj


def load_zip_array(path: str, max_bytes: int = MAX_MEMBER_BYTES) -> np.ndarray:
    """The array pickled in the one ``.pkl`` member of the zip at ``path`` (CMG's container).

    Members under ``__MACOSX/`` and AppleDouble ``._*`` files are ignored; no or several ``.pkl``
    members, a member over ``max_bytes`` (uncompressed) and a damaged zip raise
    :class:`DataError`. A missing file raises ``FileNotFoundError``.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            members = [
                i
                for i in zf.infolist()
                if ".pkl" in i.filename
                and not i.filename.startswith("__MACOSX/")
                and not i.filename.rsplit("/", 1)[-1].startswith("._")
            ]
            if len(members) != 1:
                raise DataError(f"{path}: {len(members)} .pkl members, expected one")
            info = members[0]
            if info.file_size > max_bytes:
                raise DataError(f"{path}: member {info.filename} is {info.file_size:,} bytes")
            data = zf.read(info)
    except (FileNotFoundError, DataError):
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable zip ({_one_line(exc)})") from None
    except Exception as exc:  # zlib.error on corrupt deflate data, NotImplementedError, ...
        reason = f"{type(exc).__name__}: {_one_line(exc)}"
        raise DataError(f"{path}: unreadable zip ({reason})") from None
    return load_array(data, f"{path}:{info.filename}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
