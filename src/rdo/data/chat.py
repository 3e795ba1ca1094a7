"""What a chat template says about the end of an assistant turn, and prompts rendered for generation.

A conversational response must end exactly as the tokenizer's chat template ends an assistant
turn (ChatML: `<|im_end|>\n`; Llama 3: `<|eot_id|>`), so the policy learns to stop where the
template stops, and generation must stop at the same tokens. This module is the one home of both
facts; `rdo.data.tokenize.Encoder` and `rdo generate` read them from here.

- `assistant_turn_end(tok)`: the text the template writes right after an assistant message.
- `end_of_turn_ids(tok)`: the token ids generation stops at: EOS plus every special token of that text.
- `render_prompt(tok, prompt)`: a string prompt as is, a message list through the chat template
  with the generation prompt (`add_generation_prompt=True`).
"""

from __future__ import annotations

SENTINEL = "\x00rdo-assistant-content\x00"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def assistant_turn_end(tokenizer) -> str:
    """The text the chat template writes after an assistant message's content ('' without a template)."""
    if not has_chat_template(tokenizer):
        return ""
    messages = [{"role": "user", "content": "u"}, {"role": "assistant", "content": SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that refuses this probe (e.g. one demanding a system turn) shows no turn end
        return ""
    at = text.rfind(SENTINEL)
    return text[at + len(SENTINEL):] if at >= 0 else ""


def special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    return ids


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end a response: EOS first, then the special tokens of the template's turn end."""
    out = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    turn_end = assistant_turn_end(tokenizer)
    if turn_end:
        special = special_ids(tokenizer)
        out += [i for i in tokenizer(turn_end, add_special_tokens=False)["input_ids"] if i in special and i not in out]
    return out


def render_prompt(tokenizer, prompt) -> str:
    """A prompt as the model sees it before its answer: text as is, messages via the chat template."""
    if isinstance(prompt, str):
        return prompt
    if not (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "role" in m and isinstance(m.get("content"), str) for m in prompt)):
        raise ValueError(f"a prompt is a string or a non-empty list of {{role, content}} messages, got {prompt!r}"[:300])
    if not has_chat_template(tokenizer):
        raise ValueError("message-list prompts need a tokenizer with a chat template; this one has none (give string prompts)")
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def render_response(tokenizer, prompt: list[dict], response: list[dict]) -> tuple[str, str]:
    """(prompt text with the generation prompt, response text) of a conversation through the chat template:
    the response is what the template writes after the rendered prompt. A template that renders
    prompt + response with another prefix than the prompt alone cannot isolate it: ValueError."""
    text = render_prompt(tokenizer, prompt)
    full = tokenizer.apply_chat_template(prompt + response, tokenize=False)
    if not full.startswith(text):
        raise ValueError("the chat template renders prompt+response with a different prefix than the prompt alone, "
                         "so the response cannot be isolated")
    return text, full[len(text):]
