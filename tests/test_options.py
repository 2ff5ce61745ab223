"""The shared option converters: what lm-eval's model_args strings become, and the errors."""

from __future__ import annotations

import functools

import pytest

from tandem_lm_eval.backends.base import BackendError
from tandem_lm_eval.common.options import (
    OptionError,
    as_bool,
    as_bytes,
    as_choice,
    as_count,
    as_float,
    as_int,
    as_list,
    as_str,
    converted,
)


def test_values_as_lm_eval_hands_them_over():
    assert as_bool("x", "True") is True and as_bool("x", "off") is False and as_bool("x", 1) is True
    assert as_int("x", "64") == 64 and as_int("x", "1e3") == 1000 and as_int("x", 7.0) == 7
    assert as_float("x", "0.55", 0, 1) == 0.55 and as_float("x", 3) == 3.0
    assert as_choice("x", " TopK ", ("exact", "topk")) == "topk"
    assert as_list("b", "100/500/1000") == ["100", "500", "1000"] and as_list("b", [1, 2]) == [1, 2]
    assert as_list("b", "[64:128]") == ["64", "128"] and as_list("b", 5) == [5]
    assert as_str("m", "  demo ") == "demo"
    assert as_bytes("kv", "4GiB") == 4 << 30 and as_bytes("kv", "512MiB") == 512 << 20
    assert as_bytes("kv", "2G") == 2 * 10**9 and as_bytes("kv", 1073741824) == 1 << 30
    assert as_count("p", "32e9") == as_count("p", 3.2e10) == as_count("p", "32B") == 32_000_000_000
    assert as_count("p", "1.5b") == 1_500_000_000 and as_count("p", "7_615_616_512") == 7_615_616_512


@pytest.mark.parametrize(
    "convert, args, message",
    [
        (as_bool, ("maybe",), "k must be true or false, got 'maybe'"),
        (as_bool, (2,), "k must be true or false"),
        (as_int, ("eight",), "k must be an integer, got 'eight'"),
        (as_int, ("1.5",), "k must be an integer"),
        (as_int, (True,), "k must be an integer"),
        (functools.partial(as_int, minimum=1), ("0",), "k must be >= 1"),
        (as_float, ("soon",), "k must be a number"),
        (as_float, ("nan",), r"k must be a finite number in \[-inf, inf\]"),
        (as_float, ("1.5", 0, 1), r"k must be a finite number in \[0, 1\]"),
        (as_choice, ("approx", ("exact", "topk")), "k must be one of exact, topk, got 'approx'"),
        (as_list, ({"a": 1},), "k must be a list like"),
        (as_str, ("  ",), "k must be a non-empty string"),
        (as_bytes, ("lots",), "k must be an integer"),
        (as_bytes, ("0GiB",), "k must be >= 1"),
        (as_count, ("lots",), "k must be a positive number such as 32e9 or 32B"),
        (as_count, ("0.1",), "k must be a positive number"),
    ],
)
def test_bad_values_name_the_key(convert, args, message):
    with pytest.raises(OptionError, match=message):
        convert("k", *args)


def test_a_backend_reports_option_errors_as_its_own():
    option = functools.partial(converted, BackendError, "vllm backend: ")
    assert option(as_int, "topk", "20", minimum=1) == 20
    with pytest.raises(BackendError, match="^vllm backend: topk must be >= 1, got '0'$"):
        option(as_int, "topk", "0", minimum=1)


def test_paths_are_checked_without_touching_the_file_system(tmp_path):
    from tandem_lm_eval.common.options import OptionError
    from tandem_lm_eval.common.paths import input_file, output_dir, output_file

    deep = tmp_path / "a" / "b" / "r.jsonl"
    assert output_file("--out", str(deep)) == deep and not (tmp_path / "a").exists()  # nothing created
    assert output_dir("--out", str(tmp_path / "new")) == tmp_path / "new" and not (tmp_path / "new").exists()
    (tmp_path / "f").write_text("x")
    assert output_file("--out", str(tmp_path / "f")) == tmp_path / "f"  # an existing file: appended to
    assert input_file("--records", str(tmp_path / "f")) == tmp_path / "f"
    for check, value, message in (
        (output_file, tmp_path, "is a folder: give a file path"),
        (output_file, tmp_path / "f" / "x.jsonl", "is a file, so the file cannot be made there"),
        (output_dir, tmp_path / "f", "is a file: give a folder path"),
        (output_dir, tmp_path / "f" / "sub", "is a file, so the folder cannot be made there"),
        (input_file, tmp_path / "missing", "does not exist"),
        (input_file, tmp_path, "is a folder: give the file inside it"),
        (output_file, "  ", "must be a path"),
    ):
        with pytest.raises(OptionError, match=message):
            check("--x", value)
