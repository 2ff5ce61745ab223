"""Test-wide settings. One torch thread: on 2-core machines it is faster and far less noisy."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import signal  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# A shell starts background jobs with SIGINT ignored (`cmd &` without job control), and an ignored
# signal stays ignored across exec: the Ctrl-C tests' lm_eval subprocesses would never see their
# SIGINT. Deliverable again here, for this process and every process it starts.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
os.environ.setdefault("TANDEM_DATA_DIR", str(SHARED_DATA))

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The real SmolLM2-135M-Instruct demo model as a transformers/vLLM folder (converted once)."""
    from tandem_lm_eval.data.demo_model import demo_model_dir as build

    return build()


TINY_NAME = "tiny-llama"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, demo_model_dir) -> Path:
    """A tiny random Llama (2 layers, width 64) with the demo's real tokenizer and chat template.

    Fast enough to run the whole cascade through the lm_eval CLI in seconds; its text is noise, so
    tests on it check plumbing and accounting, never answer quality.
    """
    from tandem_lm_eval.data.demo_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / TINY_NAME)


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A real (if meaningless) classifier for the tiny intern: trained on synthetic features, 3 stages."""
    import numpy as np

    from tandem_lm_eval.judgment.features import NUM_FEATURES
    from tandem_lm_eval.judgment.mlp import SufficiencyClassifier

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(3, 1, (64, NUM_FEATURES)))
    y = (X[:, 7] > 3).astype(int)
    clf = SufficiencyClassifier(max_epochs=2).fit(X, y)
    clf.card.intern_model = TINY_NAME
    clf.card.budgets = [8, 16]
    clf.card.thresholds = [0.5, 0.5, 0.5]
    return clf.save(tmp_path_factory.mktemp("classifiers") / "tiny")


@pytest.fixture(autouse=True)
def sigint_stays_deliverable():
    """A test that leaves SIGINT blocked or ignored in this process hands that on to every subprocess
    it starts later (a blocked mask and SIG_IGN survive exec), so their Ctrl-C tests see nothing:
    fail the test that did it, and restore the signal for the others."""
    yield
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    handler = signal.getsignal(signal.SIGINT)
    if blocked or handler is signal.SIG_IGN:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        pytest.fail(f"this test left SIGINT {'blocked' if blocked else 'ignored'} in the test process")
