"""
A fit killed, and resumed
=========================

A long fit can save checkpoints and continue after a crash. Here ``dnmf fit`` runs with
``--checkpoint`` in another process, which is killed with ``SIGKILL`` (no chance to clean up)
part-way through; ``dnmf resume`` then finishes it. The resumed fit ends with the same bits of
W and H as a fit that was never interrupted. You will see the loss of both runs.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

import dnmf

texts = pd.read_csv(Path("data") / "sotu_paragraphs.csv.gz")["text"]
X = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(texts).astype("float32")
where = Path(tempfile.mkdtemp(prefix="dnmf-example-"))
dnmf.save_csr(X, where / "V.zarr")
options = ["--rank", "10", "--max-iter", "80", "--tol", "0", "--threads", "--quiet"]


def dnmf_command(*arguments):
    return [sys.executable, "-m", "dnmf.cli", *arguments]


# %%
# The fit with checkpoints every 5 iterations, killed once its second checkpoint is current.

fit = subprocess.Popen(
    dnmf_command(
        "fit",
        str(where / "V.zarr"),
        "--out",
        str(where / "model.zarr"),
        "--checkpoint",
        str(where / "run.ckpt"),
        "--checkpoint-every",
        "5",
        *options,
    )
)
current = where / "run.ckpt" / "CURRENT"
while fit.poll() is None and not (current.exists() and current.read_text().strip() >= "ckpt-000010"):
    time.sleep(0.01)
os.kill(fit.pid, signal.SIGKILL)
fit.wait()
print("killed at", current.read_text().strip(), "- exit status", fit.returncode)
print("model.zarr exists after the kill:", (where / "model.zarr").exists())

# %%
# ``dnmf resume`` continues from the last complete checkpoint and writes ``model.zarr``.

subprocess.run(dnmf_command("resume", str(where / "run.ckpt"), "--threads", "--quiet"), check=True)

# %%
# The same fit, never interrupted and with no checkpoints:

subprocess.run(dnmf_command("fit", str(where / "V.zarr"), "--out", str(where / "reference.zarr"), *options), check=True)
resumed, reference = dnmf.read_result(where / "model.zarr"), dnmf.read_result(where / "reference.zarr")
print("W identical:", np.array_equal(resumed.W[...], reference.W[...]))
print("H identical:", np.array_equal(resumed.H, reference.H))

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.semilogy(reference.attrs["loss_history"], label="never interrupted", linewidth=4, alpha=0.4)
ax.semilogy(resumed.attrs["loss_history"], "k.", label="killed and resumed", markersize=4)
ax.set_xlabel("iteration")
ax.set_ylabel("loss")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# The example's files go with it.

shutil.rmtree(where)
