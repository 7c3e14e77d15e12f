"""The memory pipeline's run folder: exact files, stage skipping, re-runs on change, atomicity, store.

Runs the real stages (template distillation, hashing embeddings, KMeans) on 8 users of the embedded
ml-latest-small, so each build takes a second or two.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from recsim_personas.artifacts import file_digest
from recsim_personas.errors import ConfigError, DataError
from recsim_personas.memory.distill import DistillConfig
from recsim_personas.memory.item_text import item_embedding_text
from recsim_personas.memory.personas import PersonaConfig
from recsim_personas.memory.pipeline import (
    STAGE_OUTPUTS,
    STAGES,
    MemoryPipelineConfig,
    build_memories,
)

SPLIT_KW = {"min_interactions": 30, "max_interactions": 70, "n_users": 8, "seed": 0}
CONFIG = MemoryPipelineConfig(embedder="hashing:64", personas=PersonaConfig(k=2, k_max=4, n_init=2))


@pytest.fixture(autouse=True)
def _embedding_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSIM_PERSONAS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def dataset():
    from recsim_personas.data.registry import load_dataset

    return load_dataset("ml-latest-small")


@pytest.fixture(scope="module")
def split_config():
    from recsim_personas.data.splits import SplitConfig

    return SplitConfig(**SPLIT_KW)


@pytest.fixture(scope="module")
def base_run(dataset, split_config, tmp_path_factory):
    """One complete build, copied by tests that change it."""
    root = tmp_path_factory.mktemp("base") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("RECSIM_PERSONAS_CACHE", str(root.parent / "cache"))
    try:
        run = build_memories(dataset, split_config, CONFIG, root, progress=False)
    finally:
        mp.undo()
    return run


def _digests(root):
    return {p.relative_to(root).as_posix(): file_digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run.path, dst)
    return dst


def test_writes_exactly_the_design_files_and_a_manifest(base_run, split_config):
    root = base_run.path
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    expected = {f for stage in STAGES for f in STAGE_OUTPUTS[stage]} | {"manifest.json"}
    assert files == expected
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(manifest["stages"]) == set(STAGES)
    assert manifest["config"] == CONFIG.to_dict()
    assert manifest["versions"]["numpy"] and "git" in manifest and "hardware" in manifest
    for stage in STAGES:
        rec = manifest["stages"][stage]
        assert len(rec["inputs_hash"]) == 16 and rec["outputs"] == list(STAGE_OUTPUTS[stage])
        assert rec["seconds"] >= 0
    assert manifest["stages"]["embed"]["inputs"]["profiles"] == [file_digest(root / "profiles.parquet")]
    assert manifest["stages"]["split"]["inputs"]["split"] == split_config.to_dict()
    assert all(t.ran for t in base_run.timings.values())


def test_outputs_cover_every_user_and_train_interaction(base_run):
    root = base_run.path
    train = pd.read_parquet(root / "split/train.parquet")
    test = pd.read_parquet(root / "split/test.parquet")
    profiles = pd.read_parquet(root / "profiles.parquet")
    memories = pd.read_parquet(root / "memories.parquet")
    users = np.unique(train["user_id"])
    assert len(users) == SPLIT_KW["n_users"]
    assert sorted(profiles["user_id"]) == users.tolist()
    assert profiles["profile_text"].str.startswith("PERSONA:").all()
    pairs = set(zip(memories["user_id"], memories["item_id"]))
    assert pairs == set(zip(train["user_id"], train["item_id"])) and len(memories) == len(train)
    assert memories["text"].str.len().gt(20).all()
    p_ids = np.load(root / "embeddings/profile_user_ids.npy")
    p_vecs = np.load(root / "embeddings/profiles.npy")
    i_ids = np.load(root / "embeddings/item_ids.npy")
    i_vecs = np.load(root / "embeddings/items.npy")
    assert p_ids.tolist() == users.tolist() and p_vecs.shape == (len(users), 64) and p_vecs.dtype == np.float32
    assert set(i_ids) == set(train["item_id"]) | set(test["item_id"]), "items of the split, not the catalogue"
    np.testing.assert_allclose(np.linalg.norm(i_vecs, axis=1), 1.0, atol=1e-5)
    personas = pd.read_parquet(root / "personas.parquet")
    assert sorted(personas["user_id"]) == users.tolist() and set(personas["persona"]) == {0, 1}
    meta = json.loads((root / "personas.json").read_text())
    assert meta["k"] == 2 and len(meta["personas"]) == 2 and meta["elbow"]["ks"] == [1, 2, 3, 4]


def test_second_build_skips_every_stage_and_changes_no_file(base_run, dataset, split_config, tmp_path):
    root = _copy(base_run, tmp_path)
    before = _digests(root)
    run = build_memories(dataset, split_config, CONFIG, root, progress=False)
    assert {s: t.ran for s, t in run.timings.items()} == dict.fromkeys(STAGES, False)
    after = _digests(root)
    after.pop("manifest.json"), before.pop("manifest.json")
    assert after == before


@pytest.mark.parametrize(
    ("change", "reruns"),
    [
        ({"personas": PersonaConfig(k=3, k_max=4, n_init=2)}, {"personas"}),
        ({"embedder": "hashing:32"}, {"embed", "personas"}),
        ({"item_scope": "catalog"}, {"embed"}),
    ],
)
def test_changed_config_reruns_that_stage_and_what_depends_on_it(base_run, dataset, split_config, tmp_path,
                                                                  change, reruns):
    root = _copy(base_run, tmp_path)
    config = MemoryPipelineConfig.from_dict({**CONFIG.to_dict(), **{
        k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in change.items()}})
    run = build_memories(dataset, split_config, config, root, progress=False)
    ran = {s for s, t in run.timings.items() if t.ran}
    if change.get("item_scope") == "catalog":
        # New item vectors, same profile vectors: personas' inputs are unchanged.
        assert len(np.load(root / "embeddings/item_ids.npy")) == len(dataset.items)
    assert ran == reruns


def test_changed_distill_config_reruns_distill(base_run, dataset, split_config, tmp_path):
    root = _copy(base_run, tmp_path)
    config = MemoryPipelineConfig(distill=DistillConfig(batch_size=5), embedder=CONFIG.embedder,
                                  personas=CONFIG.personas)
    old = file_digest(root / "profiles.parquet")
    run = build_memories(dataset, split_config, config, root, progress=False)
    assert run.timings["distill"].ran and not run.timings["split"].ran
    profiles_changed = file_digest(root / "profiles.parquet") != old
    assert run.timings["embed"].ran == profiles_changed
    assert not (root / "distill_checkpoint").exists(), "checkpoints are removed after the stage"


def test_changed_split_reruns_everything(base_run, dataset, tmp_path):
    from recsim_personas.data.splits import SplitConfig

    root = _copy(base_run, tmp_path)
    run = build_memories(dataset, SplitConfig(**{**SPLIT_KW, "seed": 1}), CONFIG, root, progress=False)
    assert all(t.ran for t in run.timings.values())


def test_stage_selection(dataset, split_config, tmp_path):
    root = tmp_path / "run"
    with pytest.raises(ConfigError, match=re.escape("stage 'distill' of run folder")):
        build_memories(dataset, split_config, CONFIG, root, stages="personas", progress=False)
    run = build_memories(dataset, split_config, CONFIG, root, stages=["distill"], progress=False)
    assert list(run.timings) == ["split", "distill"]
    assert (root / "profiles.parquet").exists() and not (root / "embeddings").exists()
    run = build_memories(dataset, split_config, CONFIG, root, stages="embed,personas", progress=False)
    assert [s for s, t in run.timings.items() if t.ran] == ["embed", "personas"]
    with pytest.raises(ConfigError, match=re.escape("unknown stage 'persona'; stages are split, distill, embed, personas. Did you mean 'personas'?")):
        build_memories(dataset, split_config, CONFIG, root, stages="persona", progress=False)


def test_crash_mid_stage_leaves_no_partial_state_marked_done(base_run, dataset, split_config, tmp_path,
                                                             monkeypatch):
    """A crash after some embed files were replaced must not let a later run reuse the mix."""
    import recsim_personas.memory.pipeline as pipeline

    root = _copy(base_run, tmp_path)
    real = pipeline.atomic_write_npy
    calls = []

    def crash_on_third(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        real(path, array)

    monkeypatch.setattr(pipeline, "atomic_write_npy", crash_on_third)
    changed = MemoryPipelineConfig.from_dict({**CONFIG.to_dict(), "embedder": "hashing:32"})
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_memories(dataset, split_config, changed, root, progress=False)
    manifest = json.loads((root / "manifest.json").read_text())
    assert "embed" not in manifest["stages"], "the interrupted stage is not recorded as done"
    assert np.load(root / "embeddings/profiles.npy").shape[1] == 32, "half the files are new ..."
    assert np.load(root / "embeddings/items.npy").shape[1] == 64, "... and half old"
    assert not list(root.rglob("*.tmp")), "no temporary files are left behind"
    monkeypatch.setattr(pipeline, "atomic_write_npy", real)
    # Going back to the old config must re-run embed, not trust the mixed files.
    run = build_memories(dataset, split_config, CONFIG, root, progress=False)
    assert run.timings["embed"].ran
    assert np.load(root / "embeddings/profiles.npy").shape[1] == 64
    assert np.load(root / "embeddings/items.npy").shape[1] == 64


def test_store_round_trip(base_run):
    root = base_run.path
    store = base_run.store(device="cpu")
    profiles = pd.read_parquet(root / "profiles.parquet").set_index("user_id")
    memories = pd.read_parquet(root / "memories.parquet")
    personas = pd.read_parquet(root / "personas.parquet").set_index("user_id")["persona"]
    p_vecs = np.load(root / "embeddings/profiles.npy")
    p_ids = np.load(root / "embeddings/profile_user_ids.npy").tolist()
    test = pd.read_parquet(root / "split/test.parquet")
    assert store.users.tolist() == sorted(profiles.index)
    for u in store.users:
        assert store.profile(u) == profiles.at[u, "profile_text"]
        assert store.profile_row(u)["taste"] == profiles.at[u, "taste"]
        assert store.persona(u) == personas[u]
        np.testing.assert_array_equal(store.profile_embedding(u), p_vecs[p_ids.index(u)])
    text = {(u, i): t for u, i, t in zip(memories["user_id"], memories["item_id"], memories["text"])}
    got = store.retrieve_batch(test["user_id"], test["item_id"], k=2)
    for u, mems in zip(test["user_id"], got):
        for m in mems:
            assert m.text == text[(u, m.item_id)]
    assert store.n_personas == 2 and len(store.persona_users(0)) + len(store.persona_users(1)) == len(store.users)


def test_store_refuses_stale_embeddings(base_run, tmp_path):
    from recsim_personas.memory.store import MemoryStore

    root = _copy(base_run, tmp_path)
    profiles = pd.read_parquet(root / "profiles.parquet")
    profiles.loc[0, "taste"] = "edited by hand"
    profiles.to_parquet(root / "profiles.parquet", index=False)
    with pytest.raises(DataError, match=re.escape("the embed stage's outputs were computed from another profiles.parquet")):
        MemoryStore.from_run_dir(root)


def test_config_round_trip_and_validation():
    cfg = MemoryPipelineConfig.paper(embedder="hashing", item_scope="catalog",
                                     distill=DistillConfig(backend="openai", model="m", base_url="http://x/v1"))
    assert cfg.personas.k == 4
    assert MemoryPipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match=re.escape("item_scope 'catalogue' is not one of split, catalog (did you mean 'catalog'?)")):
        MemoryPipelineConfig(item_scope="catalogue")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=re.escape("unknown memory pipeline config key(s) 'embeder' (did you mean 'embedder'?)")):
        MemoryPipelineConfig.from_dict({"embeder": "minilm"})


def test_split_from_another_dataset_is_refused(dataset, tmp_path):
    from recsim_personas.data.splits import Split

    other = Split(train=dataset.interactions.head(5), test=dataset.interactions.iloc[5:10],
                  config=__import__("recsim_personas.data.splits", fromlist=["SplitConfig"]).SplitConfig(),
                  dataset_fingerprint="0000000000000000", dataset_name="other")
    with pytest.raises(DataError, match="the split was made from dataset 'other'"):
        build_memories(dataset, other, CONFIG, tmp_path / "run", progress=False)


def test_item_embedding_text_joins_describe_and_summary(dataset):
    from recsim_personas.data.item_catalog import ItemCatalog

    catalog = ItemCatalog(dataset, dataset.interactions)
    text = item_embedding_text(catalog, 1)
    assert text.startswith(catalog.describe(1))

    class WithSummary:
        def describe(self, item_id):
            return "The movie X."

        def summary(self, item_id):
            return "A plot. The cast of the movie is as follows: A, B"

    assert item_embedding_text(WithSummary(), 1) == "The movie X. A plot. The cast of the movie is as follows: A, B"


def test_cli_memory_command(tmp_path, capsys):
    from recsim_personas.cli.main import main

    out = tmp_path / "run"
    argv = ["memory", "--users", "6", "--min-interactions", "30", "--max-interactions", "70",
            "--embedder", "hashing:64", "--k", "2", "--k-max", "4", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for stage in ("split", "distill", "embed", "personas"):
        assert re.search(rf"^  {stage}\s+\d+\.\d+ s", text, re.M), text
    assert "Personas: K=2 (given; elbow suggests" in text
    assert len(pd.read_parquet(out / "profiles.parquet")) == 6
    assert main([*argv, "--stages", "personas"]) == 0
    assert re.search(r"^  distill\s+skipped", capsys.readouterr().out, re.M)
    assert main([*argv, "--stages", "persona"]) == 2
    assert "Did you mean 'personas'?" in capsys.readouterr().err
    fresh = [a if a != str(out) else str(tmp_path / "fresh") for a in argv]
    assert main([*fresh, "--stages", "personas"]) == 2
    assert "stage 'distill' of run folder" in capsys.readouterr().err
