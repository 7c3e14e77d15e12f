"""LoRA training on a tiny random llama over the real SmolLM2 tokenizer: learning, saving, resuming."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch

from recsim_personas.agents.prompts import build_rating_prompt
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, DataError, ModelError, RecsimWarning
from recsim_personas.training import lora
from recsim_personas.training.config import PRESETS, LoraTrainConfig
from recsim_personas.training.forward import forward_full, forward_shared
from recsim_personas.training.lora import (
    ADAPTER_INFO,
    end_of_turn_text,
    load_adapters,
    train_adapter,
)
from recsim_personas.training.tokens import TrainTokenizer

STARS = RatingScale(1, 5, 1)


@pytest.fixture(autouse=True)
def _one_thread():
    # The CI machines are shared; one intra-op thread avoids OpenMP spin-waiting under load.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def lm(tiny_lm):
    """The tiny model with its (tied) embeddings scaled up.

    A random 64-wide model with std-0.02 embeddings has logits of about +-0.2 whatever its hidden
    state, so no adapter can move the answer loss far from log(vocab); scaling the embeddings by 20
    gives the LoRA weights room to learn, as in a trained model.
    """
    model, tok = tiny_lm
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(20.0)
    return model, tok


class _Item:
    def __init__(self, item_id: int, good: bool) -> None:
        self.item_id = item_id
        self.title = f"{'Wonderful' if good else 'Dreadful'} Film {item_id}"
        self.year = 1990
        self.genres = ("Drama",)
        self.avg_rating = 4.5 if good else 1.5
        self.description = None
        self.cast = None


def _rows(tok, n_users: int = 4, per_user: int = 6, offset: int = 0) -> pd.DataFrame:
    """A rating task: 'Wonderful' films get 5, 'Dreadful' films get 1 (the compact prompt, real chat template)."""
    records = []
    for u in range(n_users):
        profile = f"I am viewer number {u}. I watch films on weekends."
        for j in range(per_user):
            item_id = offset + 100 * u + j
            good = (j + u) % 2 == 0
            prompt = build_rating_prompt("compact", profile, _Item(item_id, good), [], STARS, tokenizer=tok)
            records.append({"user_id": u, "item_id": item_id, "rating": 5.0 if good else 1.0,
                            "prefix": prompt.prefix, "suffix": prompt.suffix, "target": "5" if good else "1"})
    return pd.DataFrame(records)


def _config(**kw) -> LoraTrainConfig:
    base = dict(target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                r=8, alpha=16.0, dropout=0.0, learning_rate=1e-2, warmup_ratio=0.0, epochs=20.0,
                max_steps=16, batch_size=6, checkpoint_every=4, scheduler="constant")
    base.update(kw)
    return LoraTrainConfig(**base)


def _answer_loss(model, tok, rows) -> float:
    toks = TrainTokenizer(tok)
    parsed = [toks.row(p, s, t) for p, s, t in zip(rows.prefix, rows.suffix, rows.target, strict=True)]
    model.eval()
    with torch.no_grad():
        total, n = 0.0, 0
        for r in parsed:
            loss, k, _ = forward_full(model, [r], torch.device("cpu"), tok.pad_token_id)
            total, n = total + float(loss), n + k
    return total / n


def _adapter_tensors(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_a_few_steps_lower_the_loss_and_generalise(lm, tmp_path):
    model, tok = lm
    train, held_out = _rows(tok), _rows(tok, offset=5000)
    before = _answer_loss(model, tok, held_out)
    result = train_adapter(model, tok, train, _config(), tmp_path / "a", name="a", progress=False)
    assert result.steps == 16 and result.n_rows == len(train) and not result.cached
    assert result.final_loss < 0.6 * result.first_loss
    loaded = load_adapters(model, {"a": tmp_path / "a"})
    after = _answer_loss(loaded, tok, held_out)
    assert after < 0.6 * before  # held-out rows (unseen items) got easier too
    info = json.loads((tmp_path / "a" / ADAPTER_INFO).read_text())
    assert info["steps"] == 16 and len(info["curve"]) == 16
    assert info["config"] == _config().to_dict()
    assert info["target_counts"] == {"1": 12, "5": 12}
    assert {"git", "versions", "hardware", "data_hash", "wall_seconds"} <= set(info)


def test_base_model_is_restored(lm, tmp_path):
    model, tok = lm
    ids = torch.tensor([[5, 17, 300, 4000]])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    train_adapter(model, tok, _rows(tok), _config(max_steps=2), tmp_path / "a", name="a", progress=False)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, ref)
    assert not hasattr(model, "peft_config")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads


def test_saved_adapter_reloads_to_identical_outputs(lm, tmp_path, monkeypatch):
    model, tok = lm
    probe = torch.tensor([[11, 250, 3000, 42, 7]])
    live: dict[str, torch.Tensor] = {}
    publish = lora.publish_adapter

    def record_then_publish(peft_model, out_dir):
        with torch.no_grad():
            live["logits"] = peft_model(input_ids=probe).logits.clone()
        publish(peft_model, out_dir)

    monkeypatch.setattr(lora, "publish_adapter", record_then_publish)
    train_adapter(model, tok, _rows(tok), _config(max_steps=5), tmp_path / "a", name="persona_0__ms",
                  progress=False)
    assert {"adapter_config.json", "adapter_model.safetensors", ADAPTER_INFO} <= {
        p.name for p in (tmp_path / "a").iterdir()}
    loaded = load_adapters(model, {"persona_0__ms": tmp_path / "a"})
    with torch.no_grad():
        again = loaded(input_ids=probe).logits
        with loaded.disable_adapter():
            base = loaded(input_ids=probe).logits
    assert torch.equal(again, live["logits"])
    assert not torch.allclose(base, again)  # the adapter does something
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and sorted(cfg["target_modules"]) == sorted(_config().target_modules)


def test_interrupted_run_resumes_to_the_same_adapter(lm, tmp_path):
    model, tok = lm
    rows = _rows(tok)
    cfg = _config(max_steps=8, checkpoint_every=2, dropout=0.1)  # dropout: the RNG state must resume too
    full = train_adapter(model, tok, rows, cfg, tmp_path / "full", name="a", progress=False)

    def interrupt(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_adapter(model, tok, rows, cfg, tmp_path / "cut", name="a", progress=False, callback=interrupt)
    assert not (tmp_path / "cut" / ADAPTER_INFO).exists()
    state = torch.load(tmp_path / "cut" / "checkpoint" / "state.pt", weights_only=False)
    assert state["step"] == 5 and len(state["curve"]) == 5
    resumed = train_adapter(model, tok, rows, cfg, tmp_path / "cut", name="a", progress=False)
    assert resumed.resumed_from_step == 5 and resumed.steps == 8
    assert [c["step"] for c in resumed.curve] == list(range(1, 9))
    assert [c["loss"] for c in resumed.curve] == pytest.approx([c["loss"] for c in full.curve], abs=1e-5)
    a, b = _adapter_tensors(tmp_path / "full"), _adapter_tensors(tmp_path / "cut")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
    assert not (tmp_path / "cut" / "checkpoint").exists()


def test_finished_adapter_is_reused_and_a_changed_config_retrains(lm, tmp_path):
    model, tok = lm
    rows = _rows(tok)
    first = train_adapter(model, tok, rows, _config(max_steps=2), tmp_path / "a", name="a", progress=False)
    again = train_adapter(model, tok, rows, _config(max_steps=2), tmp_path / "a", name="a", progress=False)
    assert again.cached and again.curve == first.curve
    changed = train_adapter(model, tok, rows, _config(max_steps=3), tmp_path / "a", name="a", progress=False)
    assert not changed.cached and changed.steps == 3
    other_rows = train_adapter(model, tok, rows.iloc[:-1], _config(max_steps=3), tmp_path / "a", name="a",
                               progress=False)
    assert not other_rows.cached


def test_stale_checkpoint_is_discarded(lm, tmp_path):
    model, tok = lm
    rows = _rows(tok)
    with pytest.raises(KeyboardInterrupt):
        train_adapter(model, tok, rows, _config(max_steps=6), tmp_path / "a", name="a", progress=False,
                      callback=lambda step, loss: (_ for _ in ()).throw(KeyboardInterrupt) if step == 2 else None)
    with pytest.warns(RecsimWarning, match="belongs to another config or other rows"):
        result = train_adapter(model, tok, rows, _config(max_steps=4), tmp_path / "a", name="a", progress=False)
    assert result.resumed_from_step is None and result.steps == 4


def test_shared_prefix_pass_equals_full_sequences(lm):
    """Prefix sharing is an exact rewrite: same loss, same gradients as one full sequence per row."""
    from peft import LoraConfig, get_peft_model

    model, tok = lm
    toks = TrainTokenizer(tok)
    rows = _rows(tok, n_users=1, per_user=4)
    parsed = [toks.row(p, s, t) for p, s, t in zip(rows.prefix, rows.suffix, rows.target, strict=True)]
    assert len({tuple(r.prefix) for r in parsed}) == 1 and parsed[0].prefix
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    shared, n1, _ = forward_shared(peft_model, parsed, torch.device("cpu"))
    shared.backward()
    g_shared = {n: p.grad.clone() for n, p in params.items()}
    peft_model.zero_grad()
    full, n2, _ = forward_full(peft_model, parsed, torch.device("cpu"), tok.pad_token_id)
    full.backward()
    assert n1 == n2 == 8  # answer digit + end-of-turn, 4 rows
    torch.testing.assert_close(shared, full, atol=1e-4, rtol=1e-5)
    for n, p in params.items():
        torch.testing.assert_close(g_shared[n], p.grad, atol=1e-4, rtol=1e-4)


def test_answer_tokens_are_the_target_and_end_of_turn(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert end_of_turn_text(tok) == "<|im_end|>"
    rows = _rows(tok, n_users=1, per_user=1)
    row = TrainTokenizer(tok).row(rows.prefix[0], rows.suffix[0], rows.target[0])
    assert tok.decode(row.body[-row.n_answer:]) == rows.target[0] + "<|im_end|>"
    assert tok.decode(row.prefix + row.body[:-row.n_answer]) == rows.prefix[0] + rows.suffix[0]


def test_bad_input_is_named(lm, tmp_path):
    model, tok = lm
    rows = _rows(tok)
    with pytest.raises(ConfigError, match=re.escape("'q_prj' (did you mean 'q_proj'?) not found")):
        train_adapter(model, tok, rows, _config(target_modules=("q_prj",)), tmp_path / "a", name="a")
    with pytest.raises(DataError, match=re.escape("all 24 rows exceed max_length=20 tokens")):
        train_adapter(model, tok, rows, _config(max_length=20), tmp_path / "a", name="a")
    with pytest.raises(DataError, match="lack column"):
        train_adapter(model, tok, rows.drop(columns="target"), _config(), tmp_path / "a", name="a")
    peft_model = load_adapters_from_training(model, tok, rows, tmp_path)
    with pytest.raises(ModelError, match="needs the base model, not a PeftModel"):
        train_adapter(peft_model, tok, rows, _config(), tmp_path / "b", name="b")


def load_adapters_from_training(model, tok, rows, tmp_path):
    train_adapter(model, tok, rows, _config(max_steps=1), tmp_path / "one", name="one", progress=False)
    return load_adapters(model, {"one": tmp_path / "one"})


# -- config --------------------------------------------------------------------------------------
def test_config_round_trips_and_presets():
    for name, preset in PRESETS.items():
        assert LoraTrainConfig.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset, name
    paper = LoraTrainConfig.preset("paper")
    assert (paper.target_modules, paper.r, paper.alpha, paper.dropout, paper.learning_rate, paper.epochs,
            paper.optimizer) == (("q_proj", "k_proj"), 256, 32.0, 0.1, 3e-4, 2.0, "adamw")
    cpu = LoraTrainConfig.preset("cpu", max_steps=7)
    assert cpu.max_steps == 7 and len(cpu.target_modules) == 7
    assert all(h for h in LoraTrainConfig.field_help().values())
    assert LoraTrainConfig(target_modules="q_proj, v_proj").target_modules == ("q_proj", "v_proj")


def test_config_errors_are_named():
    with pytest.raises(ConfigError, match=re.escape("'lerning_rate' (did you mean 'learning_rate'?)")):
        LoraTrainConfig.from_dict({"lerning_rate": 1e-3})
    with pytest.raises(ConfigError, match=r"unknown LoRA training preset 'cpus'.*Did you mean 'cpu'"):
        LoraTrainConfig.preset("cpus")
    with pytest.raises(ConfigError, match="gradient_checkpointing=True needs prefix_sharing=False"):
        LoraTrainConfig(gradient_checkpointing=True)
    with pytest.raises(ConfigError, match=re.escape("scheduler must be one of constant, linear, cosine, got 'cosin'. "
                                                    "Did you mean 'cosine'")):
        LoraTrainConfig(scheduler="cosin")
    with pytest.raises(ConfigError, match=r"alpha/r = 128 is implausibly large"):
        LoraTrainConfig(r=1, alpha=128)
    with pytest.raises(ConfigError, match=r"r must be an integer >= 1, got 0; dropout must be in \[0, 1\), got 1.5"):
        LoraTrainConfig(dropout=1.5, r=0)
    assert LoraTrainConfig(batch_size=4, grad_accumulation=3).effective_batch_size == 12
    assert LoraTrainConfig(epochs=2, batch_size=8).total_steps(20) == 5
    assert LoraTrainConfig(epochs=2, batch_size=8, max_steps=3).total_steps(20) == 3


# -- the Table-1 experiment on a real (tiny) run folder -----------------------------------------------
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """Template distillation + hashing embeddings + 2 personas on 4 users of ml-latest-small."""
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import SplitConfig
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import MemoryPipelineConfig, build_memories

    root = tmp_path_factory.mktemp("exp") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("RECSIM_PERSONAS_CACHE", str(root.parent / "cache"))
    try:
        dataset = load_dataset("ml-latest-small")
        config = MemoryPipelineConfig(embedder="hashing:64", personas=PersonaConfig(k=2, k_max=3, n_init=2))
        build_memories(dataset, SplitConfig(min_interactions=30, max_interactions=60, n_users=4, seed=0),
                       config, root, progress=False)
    finally:
        mp.undo()
    return root, dataset


@pytest.mark.integration
def test_experiment_produces_table1_rows_and_resumes(run_folder, lm, tmp_path):
    import shutil

    from recsim_personas.training.experiment import (
        ExperimentConfig,
        finished_adapters,
        plan_experiment,
        run_experiment,
    )

    src, dataset = run_folder
    run = tmp_path / "run"
    shutil.copytree(src, run)
    model, tok = lm
    config = ExperimentConfig(
        train_overrides={"r": 4, "alpha": 8.0, "max_steps": 1, "checkpoint_every": 0},
        train_rows_per_user=3, test_rows_per_user=1,
    )
    plan = plan_experiment(run, config)
    assert {(a["name"], a["mode"]) for a in plan.adapters} == {
        (n, m) for n in ("persona_0", "persona_1", "single_min", "single_max") for m in ("ms", "msml")}
    sizes = {a["name"]: a["rows"] for a in plan.adapters if a["mode"] == "ms"}
    assert sizes["single_min"] == min(sizes["persona_0"], sizes["persona_1"])
    assert sizes["single_max"] == max(sizes["persona_0"], sizes["persona_1"])
    assert sizes["persona_0"] + sizes["persona_1"] == 12  # 4 users x 3 rows
    assert any("train rows: at most 3 per user" in c for c in plan.cuts)

    result = run_experiment(run, dataset, config, model=model, tokenizer=tok, progress=False)
    table = result.table
    assert table["No."].tolist() == [3, 4, 5, 6, 7, 8, 9, 10]
    assert (table["test_rows"] == 4).all()
    assert (table.loc[table["No."] <= 4, "train_seconds"] == 0).all()
    assert (table.loc[table["No."] >= 5, "train_seconds"] > 0).all()
    # 4 users x 3 rows, less the rows whose item the user's profile names (dropped: the profile answers them).
    from recsim_personas.data.splits import Split
    from recsim_personas.memory.pipeline import run_item_catalog
    from recsim_personas.memory.store import MemoryStore
    from recsim_personas.training.rows import cap_per_user, profile_names_item

    split = Split.load(run / "split")
    chosen = cap_per_user(split.train, 3, seed=0)
    store, catalog = MemoryStore.from_run_dir(run), run_item_catalog(run, dataset, split)
    named = sum(profile_names_item(store.profile(int(u)), catalog.info(int(i)))
                for u, i in zip(chosen["user_id"], chosen["item_id"], strict=True))
    assert table.loc[table["No."] == 9, "train_rows"].item() == 12 - named
    assert {p["persona"] for p in result.persona_points} == {0, 1}
    for no in range(3, 11):
        assert len(list((run / "results").glob(f"row{no:02d}_*.json"))) == 1
    assert set(finished_adapters(run)) == {f"{n}__{m}" for n in ("persona_0", "persona_1", "single_min",
                                                                   "single_max") for m in ("ms", "msml")}
    assert not hasattr(model, "peft_config")  # the caller's base model comes back plain

    # A re-run trains and evaluates nothing: every adapter and every row is reused.
    again = run_experiment(run, dataset, config, model=model, tokenizer=tok, progress=False)
    assert all(t.cached for t in again.train.values())
    pd.testing.assert_frame_equal(again.table.drop(columns="eval_seconds"), table.drop(columns="eval_seconds"))
    # Changing the evaluation (more test rows) re-evaluates but reuses the adapters.
    more = run_experiment(run, dataset, config.__class__.from_dict({**config.to_dict(), "test_rows_per_user": 2}),
                          model=model, tokenizer=tok, progress=False)
    assert all(t.cached for t in more.train.values()) and (more.table["test_rows"] == 8).all()


@pytest.mark.integration
def test_experiment_with_the_cue_trains_and_evaluates_apart(run_folder, lm, tmp_path):
    import shutil

    from recsim_personas.training.experiment import (
        ExperimentConfig,
        finished_adapters,
        run_experiment,
    )
    from recsim_personas.training.rows import build_test_rows

    src, dataset = run_folder
    run = tmp_path / "run"
    shutil.copytree(src, run)
    model, tok = lm
    config = ExperimentConfig(train_overrides={"r": 4, "alpha": 8.0, "max_steps": 1, "checkpoint_every": 0},
                              memory_modes=("ms",), adapters=("single_max",), base_rows=False,
                              train_rows_per_user=3, test_rows_per_user=1, cue=True)
    result = run_experiment(run, dataset, config, model=model, tokenizer=tok, progress=False)
    assert result.table["No."].tolist() == [5]
    assert set(finished_adapters(run)) == {"single_max_cue__ms"}  # never the plain adapter's folder
    assert (run / "results" / "row05_single_max_cue__ms.json").is_file()
    assert not (run / "results" / "row05_single_max__ms.json").exists()
    # The evaluation's prompts state the cue (the context fits it on the run's pool and train rows).
    from recsim_personas.training.context import load_context

    ctx = load_context(run, dataset, config, model, tok)
    assert ctx.cue is not None
    rows = build_test_rows(ctx.store, ctx.catalog, ctx.split.test.head(2), scale=dataset.scale, cue=ctx.cue)
    assert rows["suffix"].str.contains("NUMBERS: ").all()


@pytest.mark.integration
def test_experiment_config_round_trip_and_errors(run_folder, lm):
    from recsim_personas.errors import AdapterError
    from recsim_personas.training.experiment import ExperimentConfig, evaluate_rows

    cfg = ExperimentConfig(memory_modes=("msml",), adapters=("persona",), max_users=2, train_rows_per_user=0.5)
    assert ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.rows() == [4, 10]
    with pytest.raises(ConfigError, match=re.escape("adapters: unknown value 'persona_max'")):
        ExperimentConfig(adapters=("persona_max",))
    with pytest.raises(ConfigError, match=re.escape("'test_rows' (did you mean 'test_rows_per_user'?)")):
        ExperimentConfig.from_dict({"test_rows": 3})
    with pytest.raises(ConfigError, match=r"train_overrides: .*'lr' \(did you mean"):
        ExperimentConfig(train_overrides={"lr": 1e-3})
    root, dataset = run_folder
    with pytest.raises(AdapterError, match=r"row 9 needs adapter 'persona_0__ms', which is not trained"):
        evaluate_rows(root, dataset, ExperimentConfig(memory_modes=("ms",), adapters=("persona",)),
                      model=lm[0], tokenizer=lm[1])


# -- CLI ----------------------------------------------------------------------------------------------
def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    from recsim_personas.cli.main import main

    assert main(["train", str(tmp_path / "nowhere"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "run folder" in err and "recsim-personas memory --out" in err and "Traceback" not in err
    assert main(["evaluate", str(tmp_path), "--set", "lerning_rate=1e-3"]) == 2
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path), "--memory", "long"])
    assert exc.value.code == 2
    assert "expected ms, msml or both" in capsys.readouterr().err


@pytest.mark.integration
def test_cli_train_dry_run_prints_the_plan(run_folder, capsys):
    from recsim_personas.cli.main import main

    root, _ = run_folder
    code = main(["train", str(root), "--dry-run", "--adapters", "persona,single_max", "--memory", "ms",
                 "--train-rows-per-user", "3", "--set", "max_steps=2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "persona_0__ms" in out and "single_max__ms" in out and "single_min" not in out
    assert "cut: train rows: at most 3 per user" in out and "max_steps=2" in out
    assert not (root / "adapters").exists()
