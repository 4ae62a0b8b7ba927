"""Atomic writes: nothing partial under the final name, and ordinary file permissions."""

from __future__ import annotations

import os

import pytest

from ffexport.fsutil import atomic_path, write_bytes_atomic


def test_failed_write_leaves_the_previous_file(tmp_path):
    f = tmp_path / "a.onnx"
    write_bytes_atomic(f, b"good")
    with pytest.raises(RuntimeError):
        with atomic_path(f) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert f.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["a.onnx"]


def test_new_files_follow_the_umask_and_rewrites_keep_the_mode(tmp_path):
    f = tmp_path / "b.onnx"
    old = os.umask(0o027)
    try:
        write_bytes_atomic(f, b"x")
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == 0o640  # the umask in force when the file was made, not at import
    os.chmod(f, 0o640)
    write_bytes_atomic(f, b"y")
    assert f.stat().st_mode & 0o777 == 0o640 and f.read_bytes() == b"y"
