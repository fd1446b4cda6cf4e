"""A tiny Gemma 3 (MedGemma's architecture) model folder, built offline, for exercising the MLX code.

Random weights and a small tokenizer trained here: its output is garbage by construction and is used only to
run the real loading, generation, validation and unloading code paths, never as a result.

The folder is made the way the published MLX builds are made: a Hugging Face Gemma 3 checkpoint
(`Gemma3ForConditionalGeneration.save_pretrained`) converted and 4-bit quantised by `mlx_vlm.convert`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Gemma 3's own chat template (system text folded into the first user turn, "model" as the assistant role).
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}"
    "{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                  "<end_of_image>", "<image_soft_token>"]
IMAGE_SIZE, PATCH_SIZE, TOKENS_PER_IMAGE = 56, 14, 4


def _corpus() -> list[str]:
    """Real chest X-ray report text (Indiana/OpenI, shipped in torchxrayvision) to train the tokenizer on."""
    from medsight.nlp.indiana import load_indiana_reports

    lines = [r[key] for r in load_indiana_reports(300) for key in ("findings", "impression") if r[key]]
    return lines + ['{"status": "consistent", "findings": [], "notes": ""}']


def _tokenizer(folder: Path, vocab_size: int = 768):
    """A SentencePiece-style BPE (▁ for spaces, byte fallback) like Gemma's, trained on report text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never")
    # Gemma's decoder: ▁ back to spaces, byte tokens <0xNN> back to UTF-8 (mlx-vlm then streams it with its
    # SentencePiece detokenizer, as for the published model).
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=vocab_size,
                                                           special_tokens=SPECIAL_TOKENS + byte_tokens))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    fast.save_pretrained(folder)
    return fast


def build_tiny_gemma3(folder: Path, *, quantize: bool = True, seed: int = 0) -> Path:
    """Write an MLX Gemma 3 model folder (config, safetensors, tokenizer, processor) to `folder`.

    Args:
        folder: target folder (created; must not exist yet).
        quantize: 4-bit quantise the language model, as in mlx-community/medgemma-4b-it-4bit.
        seed: torch seed for the random weights.
    """
    import torch
    from mlx_vlm.convert import convert
    from safetensors.torch import load_file, save_file
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor

    folder = Path(folder)
    hf = folder.parent / (folder.name + "-hf")
    hf.mkdir(parents=True)
    tokenizer = _tokenizer(hf)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Gemma3Config(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=6,
            num_attention_heads=2, num_key_value_heads=1, head_dim=64, query_pre_attn_scalar=64,
            sliding_window=64, max_position_embeddings=2048, pad_token_id=ids["<pad>"],
            bos_token_id=ids["<bos>"], eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
        ),
        vision_config=dict(vision_use_head=False, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                           image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        mm_tokens_per_image=TOKENS_PER_IMAGE, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
        eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
    )
    torch.manual_seed(seed)
    Gemma3ForConditionalGeneration(config).to(torch.bfloat16).save_pretrained(hf)
    # Published Gemma 3 / MedGemma checkpoints name the SigLIP tower "vision_tower.vision_model.*".
    weights = load_file(hf / "model.safetensors")
    weights = {k.replace("vision_tower.", "vision_tower.vision_model.", 1) if k.startswith("vision_tower.")
               and not k.startswith("vision_tower.vision_model.") else k: v for k, v in weights.items()}
    save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})
    # mlx-vlm sizes the image-token pooling from text_config (published configs rely on its default, 256).
    saved = json.loads((hf / "config.json").read_text())
    saved["text_config"]["mm_tokens_per_image"] = TOKENS_PER_IMAGE
    (hf / "config.json").write_text(json.dumps(saved, indent=2))
    Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(hf)
    (hf / "processor_config.json").write_text(json.dumps(
        {"processor_class": "Gemma3Processor", "image_seq_length": TOKENS_PER_IMAGE}))
    convert(str(hf), mlx_path=str(folder), quantize=quantize, q_group_size=64, q_bits=4)
    shutil.rmtree(hf)
    return folder
