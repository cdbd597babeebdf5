"""Run the checks in order, each yielded as soon as it is done."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batchopt.doctor.basics import (
    check_cache_dir,
    check_import,
    check_python,
    check_sdk,
    constraints_file,
    normalise,
    read_pins,
)
from batchopt.doctor.needs import Needs, everything, pipeline_needs
from batchopt.doctor.result import Check

DEFAULT_CACHE = Path("out/cache")
_REINSTALL = "pip install -e . (a dependency of batchopt)"


@dataclass(frozen=True)
class DoctorOptions:
    """`batchopt doctor`'s arguments."""

    pipeline: Path | None = None
    profile: str | None = None
    cache_dir: Path | None = None
    build: bool = False  # build a missing model2vec model now
    timeout: float = 120.0  # seconds the llama.cpp probe may take


def run_checks(options: DoctorOptions) -> Iterator[Check]:
    """Python, the pipeline, the SDKs, llama.cpp, the embedders, faiss, duckdb, polars, (Ray),
    the cache folder; a component the pipeline does not use is a `skip` line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download a model at run time
    # transformers' "Loading weights" bar would sit between the lines (read at its import)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    yield check_python()
    needs = everything()
    if options.pipeline is not None:
        check, needs = pipeline_needs(options.pipeline, options.profile)
        yield check
    constraints = constraints_file()
    for dist in ("openai", "anthropic"):
        yield (check_sdk(dist, dist, constraints) if dist in needs.providers
               else _skip(dist, needs))
    yield from _llama(needs, options, constraints)
    yield from _embeddings(needs, options.build)
    yield (check_import("faiss", "faiss", "pip install 'batchopt[semantic]' (faiss-cpu)")
           if needs.faiss else _skip("faiss", needs))
    yield check_import("duckdb", "duckdb", _REINSTALL)
    yield check_import("polars", "polars", _REINSTALL)
    if needs.ray:
        yield check_import("ray", "ray", "pip install 'batchopt[ray]'")
    yield _cache(needs, options)


def _llama(needs: Needs, options: DoctorOptions, constraints: Path | None) -> Iterator[Check]:
    if "local" not in needs.providers:
        yield _skip("llama.cpp", needs)
        return
    from batchopt.doctor.llama import check_llama
    from batchopt.providers.local import default_model_path

    pin = read_pins(constraints).get(normalise("llama-cpp-python")) if constraints else None
    for where, model in needs.gguf:
        yield check_llama(model or default_model_path(), where, options.timeout, pin)


def _embeddings(needs: Needs, build: bool) -> Iterator[Check]:
    from batchopt.doctor.embeddings import check_model2vec, check_sentence_transformers

    backends = {e.backend for e in needs.embeddings}
    for embedding in needs.embeddings:
        if embedding.backend == "sentence-transformers":
            yield check_sentence_transformers(embedding.model, embedding.key)
        else:
            yield check_model2vec(embedding.model, embedding.key, build)
    if "sentence-transformers" not in backends:
        yield _skip("embeddings", needs)
    if "model2vec" not in backends:
        yield _skip("model2vec", needs)


def _cache(needs: Needs, options: DoctorOptions) -> Check:
    if options.cache_dir is not None:
        return check_cache_dir(options.cache_dir, "--cache-dir")
    if needs.cache_dir is not None:
        return check_cache_dir(needs.cache_dir, "the pipeline's cache.path")
    return check_cache_dir(DEFAULT_CACHE, "the default, relative to this folder")


def _skip(name: str, needs: Needs) -> Check:
    return Check("skip", name, f"not used by {needs.used_by}")
