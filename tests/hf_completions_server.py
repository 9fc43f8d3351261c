"""A tiny local HF model behind an OpenAI-compatible server, for a served teacher in tests: /chat/completions
answers greedily, /completions with `echo` + `logprobs: K` scores the prompt the way llama.cpp's server does
(BOS tokens left out of the echo, special tokens spelt '', None for the first token, the token's own log-prob
added to its top-K dict), so the alignment of served_targets.py meets llama.cpp's quirks without llama.cpp.

The first attempt of every third distinct prompt (the 1st, 4th, ...) is answered 429 with Retry-After: 0, to exercise retries.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from aiohttp import web


class HFCompletionsServer:
    def __init__(self, model_dir: str, top_limit: int = 20, accept_ids: bool = True) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.top_limit = top_limit
        self.accept_ids = accept_ids  # vLLM takes token-id prompts (and echoes every token); llama-cpp-python does not
        self.counts: Counter[str] = Counter()
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.url = ""

    # ----- model work ------------------------------------------------------------------------------------------
    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        import torch

        prompt = self.tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        temperature = float(body.get("temperature") or 0.0)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
        torch.manual_seed(int(body.get("seed") or 0))
        with torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=int(body.get("max_tokens") or 16), **sampling,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        new = out[0, ids.shape[1]:].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": ids.shape[1], "completion_tokens": len(new)}}

    def _score(self, body: dict[str, Any]) -> dict[str, Any]:
        import torch

        k = min(int(body["logprobs"]), self.top_limit)
        given_ids = isinstance(body["prompt"], list)
        ids = body["prompt"] if given_ids else self.tokenizer(body["prompt"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        def text(i: int) -> str:
            return self.tokenizer.decode([i], skip_special_tokens=True)
        tokens, top = [], []
        for j, token in enumerate(ids):
            if token == self.tokenizer.bos_token_id and not given_ids:  # llama.cpp leaves BOS tokens out of the echo
                continue
            tokens.append(text(token))
            if j == 0:
                top.append(None)
                continue
            values, best = logprobs[j - 1].topk(k)
            entry = {text(i): float(v) for v, i in zip(values.tolist(), best.tolist())}
            entry[text(token)] = float(logprobs[j - 1, token])
            top.append(entry)
        top[0] = None
        generated = int(logprobs[-1].argmax())
        tokens.append(text(generated))
        top.append({text(generated): float(logprobs[-1, generated])})
        return {"object": "text_completion", "choices": [{"index": 0, "text": "".join(tokens),
                "finish_reason": "length", "logprobs": {"tokens": tokens, "top_logprobs": top}}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": 1}}

    # ----- HTTP --------------------------------------------------------------------------------------------------
    def _first_attempt_refused(self, key: str) -> bool:
        # By arrival order, not by content: the student's samples are random, and every run must see a refusal.
        with self._lock:
            first = key not in self._seen
            self._seen.add(key)
            return first and len(self._seen) % 3 == 1

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            body = await request.json()
            kind = "completions" if request.path.endswith("/completions") and "chat" not in request.path else "chat"
            self.counts[kind] += 1
            key = str(body.get("prompt") or body.get("messages"))
            if kind == "completions" and isinstance(body.get("prompt"), list) and not self.accept_ids:
                self.counts["refused_ids"] += 1
                return web.json_response({"detail": "prompt: Input should be a valid string"}, status=422)
            if self._first_attempt_refused(key):
                self.counts[f"refused_{kind}"] += 1
                return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0"})
            work = self._score if kind == "completions" else self._chat
            return web.json_response(await asyncio.get_running_loop().run_in_executor(None, work, body))

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        app.router.add_post("/v1/completions", handle)
        return app

    def __enter__(self) -> "HFCompletionsServer":
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(self.app())
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}/v1"
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        started.wait(30)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
