"""Calls to one judge: an OpenAI-compatible chat-completions endpoint (httpx) or a local transformers chat model.

Every attempt ends in one outcome, counted by the caller:
- `ok`: a reply with text content;
- retried with exponential backoff and jitter: `rate_limited` (429; a Retry-After header is waited
  out), `server_error` (5xx), `timeout`, `connection_error` (refused, reset, closed mid-reply),
  `malformed` (not JSON, truncated, no choices, null content);
- not retried: `client_error` (other 4xx, e.g. a wrong key or model name), `local_error` (a prompt
  longer than a local model's context), `exception` (anything else a judge raised).
A call that runs out of retries is `gave_up`. The API key lives only in the request header and is
scrubbed from every message this module returns.
"""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

RETRIED = ("rate_limited", "server_error", "timeout", "connection_error", "malformed")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "vocab.json", "merges.txt", "tokenizer.model")


@dataclass
class Backoff:
    """Retry policy: attempt k (0-based) waits about base * 2^k (capped), jittered to [d/2, d]."""

    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        d = min(self.max_delay, self.base_delay * 2**attempt)
        d = d / 2 + rng.uniform(0, d / 2)
        return max(d, retry_after) if retry_after is not None else d  # the server's Retry-After wins when longer


@dataclass
class CallResult:
    reply: str | None  # the judge's text, None when the call failed
    attempts: list[str] = field(default_factory=list)  # outcome of each attempt, in order
    error: str | None = None  # the last failure, key scrubbed


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (a number, or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def reply_text(body: bytes) -> str:
    """The first choice's message content of a chat-completions body; ValueError says what is malformed."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"body is not JSON ({len(body)} bytes)") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ValueError("no choices in the body")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise ValueError("the first choice has no text content")
    return content


class HTTPJudge:
    """A chat-completions endpoint at `base_url` (e.g. https://api.openai.com/v1) serving `model`."""

    def __init__(self, base_url: str, model: str, api_key: str | None, *, timeout: float, backoff: Backoff,
                 decoding: dict, max_connections: int):
        import httpx

        self.base_url, self.model, self.decoding, self.backoff = base_url.rstrip("/"), model, decoding, backoff
        self._secret = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout),
                                    limits=httpx.Limits(max_connections=max_connections))
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    @property
    def identity(self) -> dict:
        """What a cached reply depends on besides the prompt (never the key)."""
        return {"kind": "http", "base_url": self.base_url, "model": self.model}

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _attempt(self, messages: list[dict]) -> tuple[str, str | None, float | None]:
        """(outcome, reply or error message, Retry-After seconds) of one request."""
        import httpx

        body = {"model": self.model, "messages": messages, **self.decoding}
        try:
            r = self._client.post(f"{self.base_url}/chat/completions", json=body)
        except httpx.TimeoutException as e:
            return "timeout", f"timed out ({type(e).__name__})", None
        except httpx.TransportError as e:  # refused, reset, closed before or during the reply
            return "connection_error", f"{type(e).__name__}: {e}", None
        if r.status_code == 429:
            return "rate_limited", "HTTP 429", retry_after_seconds(r.headers.get("retry-after"))
        if r.status_code >= 500:
            return "server_error", f"HTTP {r.status_code}", retry_after_seconds(r.headers.get("retry-after"))
        if r.status_code >= 400:
            return "client_error", f"HTTP {r.status_code}: {r.text[:200]}", None
        try:
            return "ok", reply_text(r.content), None
        except ValueError as e:
            return "malformed", str(e), None

    def complete(self, messages: list[dict]) -> CallResult:
        result = CallResult(None)
        for attempt in range(self.backoff.max_retries + 1):
            outcome, text, retry_after = self._attempt(messages)
            result.attempts.append(outcome)
            if outcome == "ok":
                result.reply = text
                return result
            result.error = self.scrub(text or outcome)
            if outcome not in RETRIED:
                return result
            if attempt < self.backoff.max_retries:
                with self._rng_lock:
                    wait = self.backoff.delay(attempt, retry_after, self._rng)
                time.sleep(wait)
        result.attempts.append("gave_up")
        return result

    def close(self) -> None:
        self._client.close()


class LocalJudge:
    """An offline transformers chat model as judge, greedy, one prompt at a time (calls are serialised)."""

    def __init__(self, model_dir: str, *, decoding: dict, device: str = "auto"):
        from rdo.utils.fingerprint import digest, file_digest, model_fingerprint

        self.base_url, self.model, self.decoding, self.device = "local", model_dir, decoding, device
        # the cache follows the content, not the folder name: weights, and the tokenizer files that render the prompt
        tokenizer_files = {p.name: file_digest(p) for p in sorted(Path(model_dir).iterdir()) if p.name in TOKENIZER_FILES}
        self._fingerprint = digest({"weights": model_fingerprint(model_dir), "tokenizer": tokenizer_files})
        self._loaded = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> dict:
        return {"kind": "local", "weights": self._fingerprint}

    def _load(self):
        if self._loaded is None:
            import torch

            from rdo.models import load_causal_lm, load_tokenizer

            from rdo.utils.distributed import device as resolve_device

            device = str(resolve_device(self.device))
            model = load_causal_lm(self.model).to(device).eval()
            self._loaded = (model, load_tokenizer(self.model), device)
        return self._loaded

    def complete(self, messages: list[dict]) -> CallResult:
        import torch

        from rdo.data.chat import end_of_turn_ids, has_chat_template
        from rdo.data.tokenize import generation_prompt_ids

        with self._lock:
            model, tok, device = self._load()
            # the conversation through its chat template (generation prompt, BOS by the training rule), as
            # `rdo generate` renders it; a model without a template reads the messages as plain text
            prompt = messages if has_chat_template(tok) else "\n\n".join(m["content"] for m in messages) + "\n\n"
            ids = torch.tensor([generation_prompt_ids(tok, prompt)], device=device)
            limit = getattr(model.config, "max_position_embeddings", None)
            new = int(self.decoding["max_tokens"])
            n = ids.shape[1]
            if limit is not None and n + new > limit:
                return CallResult(None, ["local_error"], f"prompt of {n} tokens + {new} new exceed the model's context of {limit}")
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=end_of_turn_ids(tok) or None)
            return CallResult(tok.decode(out[0, n:], skip_special_tokens=True).strip(), ["ok"])

    def scrub(self, text: str) -> str:
        return text

    def close(self) -> None:
        self._loaded = None
