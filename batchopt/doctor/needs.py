"""Which components a pipeline uses, so that `batchopt doctor PIPELINE` requires only those.

A run uses the profiles of `routing.tiers` (or `default_profile` without routing), or the one
`--profile` names; the embedders of `dedup.semantic` and of a `classifier` router; faiss for
semantic dedup; Ray for `execution.engine: ray`. Without a pipeline, everything a pipeline may
use is required (except Ray, an extra no set-up installs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchopt.doctor.llama import PACKAGED
from batchopt.doctor.result import Check, one_line
from batchopt.errors import ConfigError
from batchopt.providers.registry import traits_of

PROVIDERS = ("openai", "anthropic", "local")


@dataclass(frozen=True)
class Embedding:
    """One embedder a run loads: backend, model folder (None: the default), its YAML key."""

    backend: str
    model: Path | None
    key: str


@dataclass(frozen=True)
class Needs:
    """What a run requires; `used_by` says whose needs these are, for the skip lines."""

    used_by: str
    providers: frozenset[str]
    gguf: tuple[tuple[str, Path | None], ...]  # (where it is set, the GGUF file or None: default)
    embeddings: tuple[Embedding, ...]
    faiss: bool
    ray: bool
    cache_dir: Path | None  # None: --cache-dir or out/cache


def everything() -> Needs:
    """Every component, for a doctor run without a pipeline."""
    return Needs(
        used_by="",
        providers=frozenset(PROVIDERS),
        gguf=((PACKAGED, None),),
        embeddings=(Embedding("sentence-transformers", None, "dedup.semantic.model"),
                    Embedding("model2vec", None, "dedup.semantic.model")),
        faiss=True, ray=False, cache_dir=None,
    )


def pipeline_needs(path: Path, profile: str | None) -> tuple[Check, Needs]:
    """Validate the pipeline and say what it needs; a pipeline that does not validate fails its
    check, and the other checks then require everything."""
    from batchopt.config.pipeline import load_pipeline

    try:
        loaded = load_pipeline(path)
        chosen = _profiles(loaded, profile)
    except ConfigError as exc:
        return Check("FAIL", "pipeline", one_line(exc, 400),
                     f"fix the YAML (batchopt validate {path})"), everything()
    cfg = loaded.config
    profiles = {name: cfg.profiles[name] for name in chosen}
    gguf: dict[Path | None, str] = {}
    for name, p in profiles.items():
        if traits_of(p.provider, p.model).model_file:
            model = loaded.resolve(p.model_path) if p.model_path else None
            gguf.setdefault(model, f"profiles.{name}.model_path" if p.model_path else
                            PACKAGED)
    embeddings: list[Embedding] = []
    sem = cfg.dedup.semantic
    if sem.enabled:
        embeddings.append(_embedding(loaded, sem.backend, sem.model, "dedup.semantic.model"))
    routing = cfg.routing
    if profile is None and routing is not None and routing.strategy == "classifier":
        assert routing.classifier is not None
        found = _embedding(loaded, routing.classifier.backend, routing.classifier.model,
                           "routing.classifier.model")
        if (found.backend, found.model) not in {(e.backend, e.model) for e in embeddings}:
            embeddings.append(found)
    name = loaded.source.name
    needs = Needs(
        used_by=f"{name} (profiles {', '.join(chosen)})",
        providers=frozenset(p.provider for p in profiles.values()),
        gguf=tuple((where, model) for model, where in gguf.items()),
        embeddings=tuple(embeddings),
        faiss=sem.enabled,
        ray=cfg.execution.engine == "ray",
        cache_dir=loaded.resolve(cfg.cache.path),
    )
    routed = "" if profile is not None or routing is None else f", routing {routing.strategy}"
    semantic = f", semantic dedup with {sem.backend}" if sem.enabled else ""
    return Check("ok", "pipeline", f"{loaded.source} valid: profiles {', '.join(chosen)}"
                 f"{routed}{semantic}"), needs


def _profiles(loaded: Any, profile: str | None) -> list[str]:
    """The profiles a run sends to: --profile's, else routing's tiers, else the default."""
    if profile is not None:
        return [loaded.profile(profile)[0]]  # ConfigError for an unknown one
    routing = loaded.config.routing
    return list(routing.tiers) if routing is not None else [loaded.config.default_profile]


def _embedding(loaded: Any, backend: str, model: str | None, key: str) -> Embedding:
    return Embedding(backend, loaded.resolve(model) if model else None, key)
