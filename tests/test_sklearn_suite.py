"""scikit-learn's own NMF tests, run against dnmf: the spec of "drop-in".

The installed scikit-learn's ``sklearn/decomposition/tests/test_nmf.py`` is copied at
test time into a temporary directory with one change: ``NMF`` and
``non_negative_factorization`` are imported from dnmf (``MiniBatchNMF`` and
scikit-learn's private helpers stay scikit-learn's). It runs in a pytest of its own, with
the tests of ``MiniBatchNMF`` itself left out: those parametrized with it, and those named
after it (``test_minibatch_*``, ``test_mbnmf_*``). Every other case must pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sklearn

#: The import line of scikit-learn's test file that the copy replaces.
IMPORT = "from sklearn.decomposition import NMF, MiniBatchNMF, non_negative_factorization"
#: What it becomes.
DNMF_IMPORT = "from sklearn.decomposition import MiniBatchNMF\nfrom dnmf import NMF, non_negative_factorization"
#: A conftest that leaves out the tests of MiniBatchNMF itself.
CONFTEST = """
def pytest_collection_modifyitems(config, items):
    def of_minibatch(item):
        name = item.originalname or item.name
        return "MiniBatchNMF" in item.nodeid or name.startswith(("test_minibatch", "test_mbnmf"))

    kept = [item for item in items if not of_minibatch(item)]
    config.hook.pytest_deselected(items=[item for item in items if of_minibatch(item)])
    items[:] = kept
"""


@pytest.mark.slow
def test_scikit_learns_nmf_tests_pass_against_dnmf(tmp_path):
    source = Path(sklearn.__file__).parent / "decomposition" / "tests" / "test_nmf.py"
    text = source.read_text()
    assert IMPORT in text, f"{source} no longer imports NMF as this test expects"
    (tmp_path / "test_sklearn_nmf.py").write_text(text.replace(IMPORT, DNMF_IMPORT))
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sklearn_nmf.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary, summary
