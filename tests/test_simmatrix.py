"""Similarity-matrix CSV: round trip, stdin/stdout, and clear errors on bad input."""

from __future__ import annotations

import io
import sys
import warnings

import numpy as np
import pytest

from satkit.errors import InputFileError, ParameterError, SatkitError
from satkit.matrix.square import read_similarity_matrix, write_similarity_matrix


def write(tmp_path, text: str, name: str = "m.csv") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def one_line_error(fn, *args, match: str):
    with pytest.raises(SatkitError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg
    assert match in msg, msg
    return msg


def test_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    names = ["resnet50", "vit,with comma", "digits/resnet-s1"]
    M = rng.normal(size=(3, 3))  # asymmetric on purpose: one-sided matrices are allowed
    path = tmp_path / "m.csv"
    write_similarity_matrix(path, names, M)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got_names, got = read_similarity_matrix(path)
    assert got_names == names
    assert np.array_equal(got, M)  # repr round-trips floats exactly
    assert not list(tmp_path.glob(".*partial"))  # atomic write leaves no temp file


def test_header_corner_may_be_empty_and_spaces_are_trimmed(tmp_path):
    path = write(tmp_path, ",a, b\na,4.6,2\n b ,2.0,4.5\n")
    names, M = read_similarity_matrix(path)
    assert names == ["a", "b"]
    assert M.tolist() == [[4.6, 2.0], [2.0, 4.5]]


def test_nan_written_as_empty_cell(tmp_path):
    path = tmp_path / "m.csv"
    write_similarity_matrix(path, ["a", "b"], np.array([[1.0, np.nan], [2.0, 1.0]]))
    assert path.read_text().splitlines() == ["model,a,b", "a,1.0,", "b,2.0,1.0"]


def test_stdin_and_stdout(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"model,a,b\na,1,2\nb,3,4\n")))
    names, M = read_similarity_matrix("-")
    assert names == ["a", "b"] and M.tolist() == [[1, 2], [3, 4]]
    write_similarity_matrix("-", names, M)
    assert capsys.readouterr().out == "model,a,b\na,1.0,2.0\nb,3.0,4.0\n"


def test_not_square(tmp_path):
    path = write(tmp_path, "model,a,b,c\na,1,2,3\nb,2,1,3\n")
    one_line_error(read_similarity_matrix, path, match="not square (2 rows x 3 columns)")


def test_duplicate_names(tmp_path):
    path = write(tmp_path, "model,a,a\na,1,2\na,2,1\n")
    one_line_error(read_similarity_matrix, path, match="duplicate model name(s) 'a'")


def test_mismatched_names(tmp_path):
    path = write(tmp_path, "model,a,b,c\na,1,2,3\nc,2,1,3\nb,3,3,1\n")
    msg = one_line_error(read_similarity_matrix, path, match="row names differ from column names")
    assert "row 'c' vs column 'b'" in msg and "row 'b' vs column 'c'" in msg


def test_nan_cells_are_listed(tmp_path):
    path = write(tmp_path, "model,a,b\na,1,nan\nb,,1\n")
    msg = one_line_error(read_similarity_matrix, path, match="2 empty/NaN/infinite cell(s)")
    assert "(a, b)" in msg and "(b, a)" in msg


def test_non_numeric_cell(tmp_path):
    path = write(tmp_path, "model,a,b\na,1,high\nb,2,1\n")
    one_line_error(read_similarity_matrix, path, match="cell ('a', 'b') is 'high', not a number")


def test_ragged_row(tmp_path):
    path = write(tmp_path, "model,a,b\na,1\nb,2,1\n")
    one_line_error(read_similarity_matrix, path, match="line 2 has 2 cells, expected 3")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        read_similarity_matrix(tmp_path / "nope.csv")
    with pytest.raises(InputFileError, match="empty input"):
        read_similarity_matrix(write(tmp_path, "\n\n"))
    with pytest.raises(InputFileError, match="need a header row and at least one model row"):
        read_similarity_matrix(write(tmp_path, "model,a\n"))


def test_write_checks_shape_and_names(tmp_path):
    with pytest.raises(ParameterError, match="does not match 3 names"):
        write_similarity_matrix(tmp_path / "m.csv", ["a", "b", "c"], np.zeros((2, 2)))
    with pytest.raises(ParameterError, match="duplicate"):
        write_similarity_matrix(tmp_path / "m.csv", ["a", "a"], np.zeros((2, 2)))
