"""Model and tokenizer loading: the packaged default, local paths, hub ids offline, dtype/device."""

from __future__ import annotations

import re

import pytest
import torch

from recsim_personas.agents.llm import (
    default_model_dir,
    load_adapters,
    load_causal_lm,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)
from recsim_personas.errors import AdapterError, ModelError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_resolve_device_and_dtype():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    from recsim_personas.agents.cpu_dtype import cpu_auto_dtype

    assert resolve_dtype("auto", "cpu") == getattr(torch, cpu_auto_dtype())
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    if torch.cuda.is_available():  # pragma: no cover - CPU CI
        assert resolve_dtype("auto", "cuda") in (torch.bfloat16, torch.float16)
    else:
        with pytest.raises(ModelError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ModelError, match=re.escape("Did you mean 'float32'?")):
        resolve_dtype("flaot32", "cpu")


def test_default_tokenizer_is_cached_and_padded(smollm2_tokenizer):
    tok = load_tokenizer(None)  # second load: from the cache folder, not the GGUF
    assert tok.pad_token is not None and tok.padding_side == "left"
    assert "gguf" not in str(tok.name_or_path).lower()
    assert [tok(str(d), add_special_tokens=False)["input_ids"] for d in range(1, 6)] == [[33], [34], [35], [36], [37]]
    assert tok.chat_template and "<|im_start|>" in tok.chat_template


def test_missing_local_path_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist; pass an existing save_pretrained folder"):
        load_causal_lm(tmp_path / "no-such-model")
    with pytest.raises(ModelError, match=re.escape("model path './models/x' does not exist")):
        load_tokenizer("./models/x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=re.escape("has no config.json")):
        load_causal_lm(tmp_path / "empty")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=re.escape("is a file but not a .gguf")):
        load_causal_lm(tmp_path / "weights.bin")


def test_hub_id_offline_names_the_id_and_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"cannot load model 'nobody-here/no-such-model-xyz'.*Pass a local path"):
        load_causal_lm("nobody-here/no-such-model-xyz")


def test_local_folder_round_trip(tiny_lm, tmp_path):
    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    loaded, loaded_tok = load_causal_lm(tmp_path / "tiny", dtype="float32")
    assert not loaded.training and loaded.dtype == torch.float32
    assert loaded_tok.pad_token_id == tok.pad_token_id and loaded_tok.padding_side == "left"
    ids = torch.tensor([tok("Hello there", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-6)


def test_load_adapters(tiny_lm, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_lm
    with pytest.raises(AdapterError, match=r"adapter 'persona_0': folder .* does not exist"):
        load_adapters(model, {"persona_0": tmp_path / "nothing"})
    cfg = LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, cfg, adapter_name="persona_0")
    peft_model.eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = peft_model(ids).logits
    peft_model.save_pretrained(tmp_path / "saved")  # writes saved/persona_0/
    base = peft_model.unload()
    reloaded = load_adapters(base, {"p0": tmp_path / "saved" / "persona_0", "persona_0": tmp_path / "saved"})
    assert sorted(reloaded.peft_config) == ["p0", "persona_0"]
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, before, atol=1e-6)
    with pytest.raises(AdapterError, match="already loaded"):
        load_adapters(reloaded, {"p0": tmp_path / "saved" / "persona_0"})


@pytest.mark.integration
def test_default_model_converts_once_and_rates_digits():
    model, tok = load_causal_lm(None)
    assert (default_model_dir() / "model.safetensors").is_file()
    assert model.config.num_hidden_layers == 30 and model.dtype == resolve_dtype("auto", "cpu")
    text = tok.apply_chat_template([{"role": "user", "content": "Rate 1 to 5. Answer with a digit."}],
                                   tokenize=False, add_generation_prompt=True)
    with torch.no_grad():
        logits = model(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])).logits[0, -1]
    p = torch.softmax(logits.float(), dim=-1)[33:38].sum()
    assert 0.0 < float(p) <= 1.0
