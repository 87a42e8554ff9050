"""Parts of handwritten digits: NMF components of scikit-learn's bundled digits, as images.

Factorizes the 1797 8x8 images of ``sklearn.datasets.load_digits`` (one image a row of
V, 64 pixels) into 16 non-negative components, and draws them as 8x8 images
(``digits_parts.png``: strokes, loops and bars that add up to digits), the
reconstruction of a sample of images (``digits_reconstruction.png``) and the loss per
iteration (``digits_convergence.png``). Then lists the images most similar to the first
one by their parts: mostly the same digit.

    python scripts/examples/digits_parts.py [--out-dir DIR] [--rank K] [--max-iter N]

From the command line, on a stored V: ``dnmf plot OUT.zarr --kind components
--image-shape 8 8 --out parts.png``.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections import Counter
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

import dnmf

IMAGE_SHAPE = (8, 8)
RANK = 16
MAX_ITER = 60
#: Images drawn in the reconstruction heatmaps.
SAMPLE_ROWS = 60


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=None, help="Where to write (default: a new temporary directory).")
    parser.add_argument("--rank", type=int, default=RANK)
    parser.add_argument("--max-iter", type=int, default=MAX_ITER)
    args = parser.parse_args(argv)
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="dnmf-digits-example-"))
    out.mkdir(parents=True, exist_ok=True)

    digits = load_digits()
    X, targets = digits.data, digits.target
    model = dnmf.NMF(n_components=args.rank, init="nndsvda", max_iter=args.max_iter, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a short run on purpose: parts show early
        W = model.fit_transform(X)
    relative = model.reconstruction_err_ / (X**2).sum() ** 0.5
    print(
        f"{X.shape[0]} images of {X.shape[1]} pixels -> {args.rank} parts in {model.n_iter_} iterations "
        f"(relative error {relative:.3f})"
    )

    pictures = {
        "parts": dnmf.plot_components(model.components_, IMAGE_SHAPE, out=out / "digits_parts.png"),
        "reconstruction": dnmf.plot(
            model, "reconstruction", out / "digits_reconstruction.png", V=X, max_rows=SAMPLE_ROWS
        ),
        "convergence": dnmf.plot_convergence(model, out=out / "digits_convergence.png"),
    }
    paths = [out / f"digits_{name}.png" for name in pictures]
    print("wrote " + ", ".join(str(p) for p in paths))

    labels = [f"image {i} (a {t})" for i, t in enumerate(targets)]
    matches = dnmf.similar(W, 0, top=10, labels=labels)
    same = sum(targets[m.index] == targets[0] for m in matches)
    print(
        f"\nimages most like image 0 (a {targets[0]}), by their parts: {same} of {len(matches)} are also a {targets[0]}"
    )
    for match in matches[:5]:
        print(f"  {match.label:<20} cosine {match.score:.3f}")
    print(f"  ... digits among the 10: {dict(Counter(int(targets[m.index]) for m in matches))}")
    return {"model": model, "W": W, "pictures": paths, "same_digit": same, "matches": matches}


if __name__ == "__main__":
    main()
