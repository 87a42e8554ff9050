"""
Topics of a century of State of the Union addresses
===================================================

Topic modelling is NMF of a tf-idf matrix: the documents are rows, the terms columns, and each
component is a topic (a row of ``H``: weights over the terms) that each document mixes in some
share (a row of ``W``). Here the documents are the 7,130 paragraphs of the 98 spoken State of
the Union addresses, 1913–2026 (public domain). You will see each topic's top terms and how
the topics rise and fall over the century.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import dnmf

DATA = Path("data")  # beside this example
paragraphs = pd.read_csv(DATA / "sotu_paragraphs.csv.gz")
print(paragraphs[["speech", "president", "text"]].head(3))

# %%
# :func:`dnmf.find_topics` builds the tf-idf matrix (scikit-learn's ``TfidfVectorizer``,
# English stop words removed) in a Zarr store, factorizes it out of core, and names each
# topic by its top terms.

topics = dnmf.find_topics(DATA / "sotu_paragraphs.csv.gz", 10, column="text", label_column="speech", random_state=0)
for t, terms in enumerate(topics.terms):
    print(f"topic {t}: {', '.join(term for term, weight in terms[:8])}")

# %%
# The top terms of each topic, as bars:

dnmf.plot_components(topics.model.components_, feature_names=topics.vocabulary, top=8, columns=5)

# %%
# Each paragraph's topic mix, averaged per year: which subjects each decade spoke about.

mix = pd.DataFrame(topics.mix, columns=[" ".join(term for term, weight in terms[:2]) for terms in topics.terms])
yearly = mix.groupby(paragraphs["year"].to_numpy()).mean()
yearly = yearly.rolling(5, min_periods=1, center=True).mean()
fig, ax = plt.subplots(figsize=(10, 4.5))
ax.stackplot(yearly.index, yearly.T.to_numpy(), labels=yearly.columns, alpha=0.9)
ax.set_xlim(yearly.index.min(), yearly.index.max())
ax.set_ylabel("share of the paragraphs (5-year mean)")
ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
fig.tight_layout()
plt.show()
