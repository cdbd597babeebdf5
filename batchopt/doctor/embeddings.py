"""The embedding checks: the sentence-transformers model and the model2vec static model load and
embed one text. In this process: torch and model2vec fail with exceptions, not signals.

A missing default model2vec model is a warning, not a failure: the first run that needs it
builds it (`batchopt.services.embed.ensure_model2vec`); `--build` builds it now instead.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from batchopt.doctor.result import Check, one_line
from batchopt.errors import ConfigError

SEMANTIC = "pip install 'batchopt[semantic]' (make setup)"
_DISTILL_NEEDS = ("model2vec", "torch", "transformers", "skeletoken")


def check_sentence_transformers(model: Path | None, key: str) -> Check:
    """Load the model (default: the packaged all-MiniLM-L6-v2) and embed one text."""
    return _embed_one("embeddings", "sentence-transformers", model, key, built="")


def check_model2vec(model: Path | None, key: str, build: bool) -> Check:
    """The model2vec model: a given folder must be one; the default one may still be unbuilt."""
    from batchopt.services.embed import default_model2vec_path, ensure_model2vec, find_model2vec

    if model is not None:
        if not (model / "config.json").is_file():
            return Check("FAIL", "model2vec", f"{key}: {model} is not a model2vec model folder "
                         "(no config.json)", f"fix {key} in the pipeline (models are never "
                         "downloaded)")
        return _embed_one("model2vec", "model2vec", model, key, built="")
    missing = [name for name in _DISTILL_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        return Check("FAIL", "model2vec", f"{', '.join(missing)} not installed", SEMANTIC)
    built = ""
    if find_model2vec() is None:
        if not build:
            return Check("warn", "model2vec", f"not built yet at {default_model2vec_path()}; the "
                         "first run that needs it builds it (about 30 s)",
                         "build it now: batchopt doctor --build")
        start = time.perf_counter()
        try:
            ensure_model2vec()
        except ConfigError as exc:
            return Check("FAIL", "model2vec", f"build failed: {one_line(exc)}", SEMANTIC)
        built = f"built in {time.perf_counter() - start:.0f} s, "
    return _embed_one("model2vec", "model2vec", None, key, built=built)


def _embed_one(name: str, backend: str, model: Path | None, key: str, built: str) -> Check:
    from batchopt.services.embed import default_model2vec_path, load_embedder

    start = time.perf_counter()
    try:
        embedder = load_embedder(backend, model)
        vectors = embedder.embed(["batchopt doctor: one text to embed"])
    except ConfigError as exc:
        # a missing package (the message says what to install) or a bad model folder
        given = model is not None and "pip install" not in str(exc)
        fix = f"fix {key} in the pipeline" if given else SEMANTIC
        return Check("FAIL", name, one_line(exc), fix)
    except Exception as exc:  # a broken torch or model file: say what, do not crash doctor
        return Check("FAIL", name, f"{type(exc).__name__}: {one_line(exc, 200)}", SEMANTIC)
    seconds = time.perf_counter() - start
    if vectors.shape != (1, embedder.dim):
        return Check("FAIL", name, f"{embedder.name} returned shape {vectors.shape}", SEMANTIC)
    # where a built or given model is; the packaged MiniLM's site-packages folder says little
    folder = model or (default_model2vec_path() if backend == "model2vec" else None)
    where = f" ({folder})" if folder else ""
    return Check("ok", name, f"{built}{embedder.name}, {embedder.dim} dims, loaded and embedded "
                 f"1 text in {seconds:.1f} s{where}")
