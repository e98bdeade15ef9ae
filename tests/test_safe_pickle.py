"""The restricted unpickler: NumPy arrays come back exactly, nothing else runs or loads."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from comet_model.data import DataError
from comet_model.data.safe_pickle import load_array, load_zip_array

ARRAYS = {
    "float64 2-D": np.random.default_rng(0).standard_normal((10, 128)),
    "float32 pool5": np.random.default_rng(1).random((10, 2, 2, 8), dtype=np.float32),
    "float16": np.arange(12, dtype=np.float16).reshape(3, 4),
    "fortran order": np.asfortranarray(np.random.default_rng(2).random((4, 5))),
    "non-contiguous": np.random.default_rng(3).random((6, 8))[::2, 1::3],
    "empty": np.zeros((0, 128)),
    "0-d": np.array(2.5),
    "int64": np.arange(5),
    "big-endian": np.arange(4, dtype=">f8"),
}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_arrays_come_back_as_plain_pickle_gives_them(name: str, protocol: int) -> None:
    a = ARRAYS[name]
    data = pickle.dumps(a, protocol=protocol)
    b, ref = load_array(data, "x.pkl"), pickle.loads(data)  # these bytes are benign
    assert type(b) is np.ndarray and b.dtype == ref.dtype and b.shape == a.shape
    assert np.array_equal(a, b) and b.tobytes() == ref.tobytes()


def test_numpy_1_names_are_accepted() -> None:
    """CMG's pickles come from NumPy 1.x, which names numpy.core, not numpy._core."""
    a = ARRAYS["float64 2-D"]
    old = pickle.dumps(a, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old
    assert np.array_equal(load_array(old, "old.pkl"), a)


class _Reduce:
    """An object that pickles as a call of ``func(*args)``."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _malicious(target: Path) -> dict[str, bytes]:
    return {
        "os.system": pickle.dumps(_Reduce(os.system, f"touch {target}")),
        "open for writing": pickle.dumps(_Reduce(builtins.open, str(target), "w")),
        "subprocess": pickle.dumps(_Reduce(subprocess.call, ["touch", str(target)])),
        "eval": pickle.dumps(_Reduce(builtins.eval, f"open({str(target)!r}, 'w')")),
        "inside an array's list": pickle.dumps(
            [np.zeros(2), _Reduce(os.system, f"touch {target}")]
        ),
    }


@pytest.mark.parametrize("case", sorted(_malicious(Path("x"))))
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, case: str) -> None:
    target = tmp_path / "pwned"
    data = _malicious(target)[case]
    with pytest.raises(DataError) as err:
        load_array(data, "clip.pkl")
    msg = str(err.value)
    assert msg.startswith("clip.pkl: ") and "\n" not in msg
    assert "refused" in msg
    assert not target.exists()


@pytest.mark.parametrize("case", ["os.system", "open for writing", "subprocess"])
def test_the_same_pickles_do_run_under_plain_pickle(tmp_path: Path, case: str) -> None:
    """The refusal above is meaningful: plain pickle.loads creates the file."""
    target = tmp_path / "pwned"
    result = pickle.loads(_malicious(target)[case])
    if hasattr(result, "close"):
        result.close()
    assert target.exists()


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"features": np.zeros(3)}, "holds a dict"),
        ([1.0, 2.0], "holds a list"),
        (3.0, "holds a float"),
        (np.array(["a", "b"]), "dtype <U1"),
        (np.array([1, None], dtype=object), "object dtype refused"),
        (np.ma.zeros(3), "refused global numpy.ma"),
    ],
)
def test_non_arrays_are_refused_with_one_line(obj: object, expected: str) -> None:
    with pytest.raises(DataError, match=expected) as err:
        load_array(pickle.dumps(obj), "c.pkl")
    assert "\n" not in str(err.value) and str(err.value).startswith("c.pkl: ")


@pytest.mark.parametrize("data", [b"", b"garbage", pickle.dumps(np.zeros(3))[:-4]])
def test_truncated_or_garbage_bytes(data: bytes) -> None:
    with pytest.raises(DataError, match="g.pkl: .*unreadable"):
        load_array(data, "g.pkl")


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_container_like_cmg(tmp_path: Path) -> None:
    a = ARRAYS["float32 pool5"]
    members = {
        "x/clip.pkl": pickle.dumps(a),
        "__MACOSX/x/._clip.pkl": b"\x00\x05apple",
        "r.txt": b"",
    }
    path = _zip(tmp_path / "clip.zip", members)
    assert np.array_equal(load_zip_array(str(path)), a)


def test_zip_problems_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_zip_array(str(tmp_path / "absent.zip"))
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04not really")
    cases = {
        bad: "unreadable zip",
        _zip(tmp_path / "none.zip", {"a.npy": b""}): "0 .pkl members",
        _zip(tmp_path / "two.zip", {"a.pkl": b"", "b.pkl": b""}): "2 .pkl members",
    }
    big = _zip(tmp_path / "big.zip", {"a.pkl": pickle.dumps(np.zeros(1000))})
    for path, expected in cases.items():
        with pytest.raises(DataError, match=expected) as err:
            load_zip_array(str(path))
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="bytes"):
        load_zip_array(str(big), max_bytes=100)  # an oversized (zip bomb) member


def test_a_damaged_member_is_reported(tmp_path: Path) -> None:
    path = _zip(tmp_path / "c.zip", {"c.pkl": pickle.dumps(np.arange(10000.0))})
    raw = bytearray(path.read_bytes())
    raw[60:90] = b"\xff" * 30  # inside the deflated member data
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="c.zip: unreadable"):
        load_zip_array(str(path))
