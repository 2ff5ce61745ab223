"""Loaders that cannot be turned against the user (issue 21 item 8): the rank collectives decode JSON,
never pickle, whatever the launcher's store holds; a classifier card cannot make the loader allocate more
than its weights file holds; a per-group classifier's members stay inside its folder."""

from __future__ import annotations

import json
import math
import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from tandem_lm_eval.cost.ledger import PhaseTimes, RunSummary
from tandem_lm_eval.harness import rank_codec
from tandem_lm_eval.harness.rank_codec import RankPayloadError
from tandem_lm_eval.harness.ranks import LaunchInfo, RankGroup
from tandem_lm_eval.harness.reporting import TandemResponse
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.features import NUM_FEATURES
from tandem_lm_eval.judgment.grouped import GroupedClassifier
from tandem_lm_eval.judgment.loading import load_classifier_folder, make_classifier
from tandem_lm_eval.judgment.mlp import SufficiencyClassifier
from tandem_lm_eval.judgment.weights import read_header


# --- the rank collectives: JSON ------------------------------------------------------------------------
def _summary() -> RunSummary:
    return RunSummary(
        requests=3, mentor_tokens=40, intern_tokens=12, tflops=1.5, stage_counts={0: 1, 2: 2},
        early_stops=1, times=PhaseTimes(0.5, 0.25, 0.125, 1.0), usd=None, scored_stages=5,
    )  # fmt: skip


class Cost:
    """What a ledger's ``as_dict`` gives a TandemResponse."""

    def as_dict(self):
        return {"tflops": 1.0}


def test_every_object_the_ranks_exchange_round_trips_through_json():
    # lm-eval's logged samples and metrics (tuple keys, tuple arguments, response strings), a request
    # count tensor, the plugin's summary and store counts and trace parts (harness/lm.py _gather_call)
    samples = {
        "tandem_gsm8k": [
            {"doc_id": 0, "doc": {"question": "1+1?", "answer": "2", "score": np.float64(0.5)},
             "arguments": [("Q: 1+1?", {"until": ["\n"], "max_gen_toks": 8})],
             "resps": [[TandemResponse("2", Cost())]], "filtered_resps": ["2"], "exact_match": 1.0}
        ]
    }  # fmt: skip
    metrics = {"tandem_gsm8k": {("exact_match", "strict"): [1.0, 0.0], ("bleu", "none"): [("a", "b")]}}
    mine = {
        "summary": _summary(),
        "store": {"mentor": {"generations_served": 1}},
        "store_by_replica": None,
        "parts": [("/tmp/trace.jsonl.rank1", 3)],
        "raw": b"\x00\xffbytes",
        "count": torch.tensor(7),
        "counts": torch.tensor([[1, 2], [3, 4]], dtype=torch.int32),
        "nan": math.inf,
    }
    payload = rank_codec.encode([samples, metrics, mine])
    json.loads(payload)  # plain JSON, nothing else
    got_samples, got_metrics, got = rank_codec.decode(payload)
    assert got_samples["tandem_gsm8k"][0]["arguments"] == [("Q: 1+1?", {"until": ["\n"], "max_gen_toks": 8})]
    assert got_samples["tandem_gsm8k"][0]["resps"] == [["2"]]
    assert got_samples["tandem_gsm8k"][0]["doc"]["score"] == 0.5
    assert got_metrics == metrics
    assert got["summary"] == _summary() and got["summary"].stage_counts == {0: 1, 2: 2}
    assert got["parts"] == [("/tmp/trace.jsonl.rank1", 3)] and got["raw"] == b"\x00\xffbytes"
    assert got["count"].shape == () and int(got["count"]) == 7
    assert got["counts"].dtype == torch.int32 and got["counts"].tolist() == [[1, 2], [3, 4]]
    assert got["nan"] == math.inf and got["store_by_replica"] is None


class Planted:
    """A pickle that would create a file when unpickled: what a writer to the launcher's store could plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class FakeStore:
    """The launcher's key-value store (torch's TCPStore): set/get/wait/delete/add."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def set(self, key, value):
        self.data[key] = value if isinstance(value, bytes) else str(value).encode()

    def get(self, key):
        return self.data[key]

    def wait(self, keys):
        assert all(k in self.data for k in keys)

    def delete_key(self, key):
        self.data.pop(key, None)

    def add(self, key, n):
        value = int(self.data.get(key, b"0")) + n
        self.data[key] = str(value).encode()
        return value


def test_a_pickle_planted_in_the_launchers_store_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    store = FakeStore()
    store.set("1:generate_until/1", pickle.dumps(Planted(marker)))  # rank 1's slot, written first
    group = RankGroup(LaunchInfo(rank=0, world_size=2, local_rank=0, local_world_size=2), store)
    with pytest.raises(RankPayloadError, match="not JSON"):
        group.gather_object({"mine": 1}, dst=0, tag="generate_until")
    assert not marker.exists()
    with pytest.raises(RankPayloadError, match="unknown kind"):
        rank_codec.decode(b'{"__tandem__": "pickle", "data": "..."}')
    with pytest.raises(RankPayloadError, match="dataclass"):  # only the named dataclasses can be built
        rank_codec.decode(b'{"__tandem__": "dataclass", "name": "Popen", "fields": {}}')
    with pytest.raises(RankPayloadError, match="dtype"):
        rank_codec.decode(b'{"__tandem__": "tensor", "dtype": "object", "shape": [], "values": [0]}')


def test_the_collectives_between_ranks_carry_json(tmp_path):
    store = FakeStore()
    rank1 = RankGroup(LaunchInfo(rank=1, world_size=2, local_rank=1, local_world_size=2), store)
    rank0 = RankGroup(LaunchInfo(rank=0, world_size=2, local_rank=0, local_world_size=2), store)
    assert rank1.gather_object({"summary": _summary()}, dst=0) is None
    json.loads(store.data["1:gather/1"])
    got = rank0.gather_object({"summary": _summary()}, dst=0)
    assert got == [{"summary": _summary()}, {"summary": _summary()}]


# --- classifier weights: shapes from the header before any allocation --------------------------------
def _mlp_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, NUM_FEATURES))
    y = (X[:, 0] > 0).astype(int)
    clf = make_classifier("mlp", hidden_sizes=(8, 4), max_epochs=2).fit(X, y)
    return clf.save(tmp_path / "mlp")


def test_a_card_naming_a_huge_network_is_refused_before_any_layer_is_built(tmp_path, monkeypatch):
    folder = _mlp_folder(tmp_path)
    assert isinstance(load_classifier_folder(folder), SufficiencyClassifier)  # the honest folder loads
    meta_path = folder / "classifier.json"
    meta = json.loads(meta_path.read_text())
    meta["architecture"]["hidden_sizes"] = [40000, 40000]  # 6.4 GB of float32 layers
    meta_path.write_text(json.dumps(meta))
    assert meta_path.stat().st_size < 10_000

    def no_layers(self):
        raise AssertionError("layers were built before the shape check")

    monkeypatch.setattr(SufficiencyClassifier, "_build", no_layers)
    tracemalloc.start()
    try:
        with pytest.raises(ClassifierError, match=r"net\.0\.weight.*\[8, 17\].*\[40000, 17\]"):
            load_classifier_folder(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, peak  # a few KB of JSON read, nothing of the card's size


def test_weights_that_lie_about_their_size_are_refused(tmp_path):
    folder = _mlp_folder(tmp_path)
    weights = folder / "model.safetensors"
    raw = weights.read_bytes()
    (length,) = np.frombuffer(raw[:8], dtype="<u8")
    header = json.loads(raw[8 : 8 + int(length)])
    header["net.0.weight"]["shape"] = [40000, 17]  # claims more than its bytes
    text = json.dumps(header).encode()
    weights.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + int(length) :])
    with pytest.raises(ClassifierError, match=r"net\.0\.weight.*is not \d+ bytes"):
        read_header(weights)
    with pytest.raises(ClassifierError, match="is not"):
        load_classifier_folder(folder)
    weights.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(ClassifierError, match="header length"):
        load_classifier_folder(folder)


def test_the_header_check_names_a_missing_tensor(tmp_path):
    folder = _mlp_folder(tmp_path)
    meta_path = folder / "classifier.json"
    meta = json.loads(meta_path.read_text())
    meta["architecture"]["hidden_sizes"] = [8, 4, 2]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ClassifierError, match=r"missing net\.9\.bias, net\.9\.weight"):
        load_classifier_folder(folder)
    meta["architecture"]["hidden_sizes"] = [8, "4"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ClassifierError, match="hidden_sizes must be a list of positive integers"):
        load_classifier_folder(folder)


# --- per-group members inside their folder -------------------------------------------------------------
def _grouped_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    X = np.abs(rng.normal(2.0, 1.0, (80, NUM_FEATURES)))
    y = (X[:, 3] > 2.0).astype(int)

    def member():
        clf = make_classifier("logistic").fit(X, y)
        clf.card.budgets = [8, 16]
        return clf

    return GroupedClassifier({"algebra": member()}, member(), "doc:subject").save(tmp_path / "grouped")


@pytest.mark.parametrize(
    "where, message",
    [
        ("../elsewhere", "no absolute path, no '..'"),
        ("ABSOLUTE", "no absolute path, no '..'"),
        ("group-algebra/../../elsewhere", "no absolute path, no '..'"),
        (".", "outside"),
        ("escape", "outside"),  # a symlink inside the folder to a classifier outside it
        ("", "relative path"),
    ],
)
def test_a_group_member_outside_its_folder_is_refused(tmp_path, where, message):
    folder = _grouped_folder(tmp_path)
    outside = tmp_path / "elsewhere"
    os.rename(folder / "group-algebra", outside)  # a real classifier, but outside the folder
    (folder / "escape").symlink_to(outside, target_is_directory=True)
    meta_path = folder / "classifier.json"
    meta = json.loads(meta_path.read_text())
    meta["groups"]["algebra"] = str(outside) if where == "ABSOLUTE" else where
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ClassifierError, match=message):
        load_classifier_folder(folder)


def test_a_group_member_inside_its_folder_loads(tmp_path):
    folder = _grouped_folder(tmp_path)
    clf = load_classifier_folder(folder)
    assert isinstance(clf, GroupedClassifier) and set(clf.members) == {"algebra"}
    meta_path = folder / "classifier.json"
    meta = json.loads(meta_path.read_text())
    (folder / "nested").mkdir()
    os.rename(folder / "group-algebra", folder / "nested" / "algebra")
    (folder / "link").symlink_to(folder / "nested", target_is_directory=True)  # a symlink that stays inside
    meta["groups"]["algebra"] = "link/algebra"
    meta_path.write_text(json.dumps(meta))
    assert set(load_classifier_folder(folder).members) == {"algebra"}
