"""
A fit on a Dask cluster
=======================

The same estimator runs on a ``distributed`` cluster: start one (here a ``LocalCluster`` of two
workers in this process, so that the example also runs as a plain script; ``dnmf fit`` starts
worker processes, and on a real cluster you give your scheduler's address) and fit inside its
``Client``.
Each panel task reads its rows of V where it runs, and only k-sized data come back to this
process. The matrix is the tf-idf matrix of 7,130 State of the Union paragraphs, stored as a
Zarr CSR group. You will see which worker ran which task over the fit, and the loss per
iteration.
"""

import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from distributed import Client, LocalCluster, get_task_stream
from sklearn.feature_extraction.text import TfidfVectorizer

import dnmf

texts = pd.read_csv(Path("data") / "sotu_paragraphs.csv.gz")["text"]
X = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(texts).astype("float32")
where = tempfile.mkdtemp(prefix="dnmf-example-")
path = dnmf.save_csr(X, f"{where}/tfidf.zarr")  # what a cluster's workers can open by themselves
print(f"{X.shape[0]} paragraphs x {X.shape[1]} terms, {X.nnz} entries, in {path.path}")

# %%
# Fit on the cluster. ``panel_rows`` cuts V into 8 panels so that both workers have work.

with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
    with Client(cluster) as client:
        with get_task_stream(client) as record:  # Dask's record of every task the workers run
            model = dnmf.NMF(n_components=10, random_state=0, panel_rows=1000)
            W = model.fit_transform(path)  # a Dask array on the cluster
            W = W.compute()
        stream = record.data
        workers = sorted(client.scheduler_info()["workers"])
print(f"{model.n_iter_} iterations, W {W.shape}")

# %%
# The task stream: one bar per task, one row per worker.

fig, ax = plt.subplots(figsize=(9, 2.6))
start = min(task["startstops"][0]["start"] for task in stream)
for task in stream:
    row = workers.index(task["worker"])
    for part in task["startstops"]:
        if part["action"] == "compute":
            ax.broken_barh([(part["start"] - start, part["stop"] - part["start"])], (row - 0.4, 0.8))
ax.set_yticks(range(len(workers)), [f"worker {i}" for i in range(len(workers))])
ax.set_xlabel("seconds")
fig.tight_layout()
plt.show()

# %%
# The loss of every iterate (``loss_history_``):

dnmf.plot_convergence(model)

# %%
# The example's files go with it.

shutil.rmtree(where)
