"""``recsim-personas serve``: the vLLM command of a run folder (printed; launching is in test_served_vllm)."""

from __future__ import annotations

import shlex

import pytest

from recsim_personas.cli.main import main


@pytest.fixture()
def run_with_adapters(tmp_path, smollm2_tokenizer):
    from conftest import build_tiny_llama
    from peft import LoraConfig, get_peft_model

    run = tmp_path / "run"
    for name, rank in (("persona_0__ms", 4), ("persona_1__ms", 12), ("persona_0__msml", 4)):
        cfg = LoraConfig(r=rank, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(build_tiny_llama(smollm2_tokenizer), cfg).save_pretrained(run / "adapters" / name)
    return run


def test_serve_prints_the_vllm_command_with_every_adapter(run_with_adapters, tmp_path, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    assert main(["serve", str(run_with_adapters), "--model", str(model_dir), "--port", "8123",
                 "--memory", "ms", "--python", "/venv/bin/python"]) == 0
    argv = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
    assert argv[:4] == ["HF_HUB_OFFLINE=1", "VLLM_CPU_KVCACHE_SPACE=2", "/venv/bin/python", "-m"]
    assert argv[argv.index("--model") + 1] == str(model_dir.resolve())
    assert argv[argv.index("--max-lora-rank") + 1] == "16"  # the largest rank (12), rounded up to vLLM's set
    modules = argv[argv.index("--lora-modules") + 1 :]
    names = [m.split("=")[0] for m in modules]
    assert names == ["persona_0__ms", "persona_1__ms", "__base__"]  # msml left out; the base as a zero adapter
    assert argv[argv.index("--max-loras") + 1] == "3" and "--enable-prefix-caching" in argv
    # dtype auto: this CPU's (float32 without bf16 units); prefix-cache blocks of 32 tokens.
    from recsim_personas.agents.cpu_dtype import cpu_auto_dtype

    assert argv[argv.index("--dtype") + 1] == cpu_auto_dtype()
    assert argv[argv.index("--block-size") + 1] == "32"
    zero = run_with_adapters / "serve" / "base_zero_adapter"
    assert modules[-1] == f"__base__={zero}" and (zero / "adapter_config.json").is_file()

    from safetensors.torch import load_file

    assert all(float(t.abs().max()) == 0.0 for t in load_file(str(zero / "adapter_model.safetensors")).values())


def test_serve_without_adapters_is_a_one_line_error(tmp_path, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no trained adapters" in err and "recsim-personas train" in err
