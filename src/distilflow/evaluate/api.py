"""Measuring a model behind an OpenAI-compatible chat endpoint (hosted APIs, Azure OpenAI, vLLM, SGLang,
llama.cpp, Ollama) with the openai SDK. Latency and time to first token are over the network (streamed
answers, one request at a time); throughput is `batch_size` requests in flight; memory and parameters are
the server's and cannot be measured from here; cost per 1,000 answers comes from the token usage."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from distilflow.errors import DistilflowError
from distilflow.evaluate.local import last_user_text
from distilflow.evaluate.perf import latency_summary


@dataclass
class ApiAnswer:
    text: str
    seconds: float
    ttft: float | None
    prompt_tokens: int | None
    completion_tokens: int | None


def make_client(config: dict[str, Any]):
    """An openai client for the endpoint; the key is read from the named environment variable, never stored."""
    from openai import AzureOpenAI, OpenAI

    name = config.get("api_key_env")
    key = os.environ.get(name) if name else None
    if name and not key:
        raise DistilflowError(f"environment variable {name} is not set (it should hold the API key for "
                              f"{config.get('base_url') or 'the endpoint'})")
    options = {"api_key": key or "not-needed",  # local servers (vLLM, llama.cpp, Ollama) accept any key
               "timeout": float(config.get("timeout", 120.0)), "max_retries": int(config.get("max_retries", 6)),
               "default_headers": config.get("headers") or None}
    if config.get("api_version"):
        return AzureOpenAI(azure_endpoint=config["base_url"], api_version=config["api_version"], **options)
    return OpenAI(base_url=config.get("base_url"), **options)


class ApiModel:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.client = make_client(config)
        self.usage_in_stream = True  # cleared if the server rejects stream_options

    def _request(self, messages: list[dict[str, str]], **extra: Any):
        import openai

        try:
            return self.client.chat.completions.create(model=self.config["model"], messages=messages,
                                                       max_tokens=self.config["max_tokens"], temperature=0.0, **extra)
        except openai.BadRequestError as error:
            if "stream_options" in extra:
                raise  # answer_streaming retries without it
            raise self._error(error) from None
        except openai.APIError as error:
            raise self._error(error) from None

    def _error(self, error: Exception) -> DistilflowError:
        where = self.config.get("base_url") or "the OpenAI API"
        first_line = (str(error).splitlines() or [""])[0][:200]
        return DistilflowError(f"request to {where} for model {self.config['model']!r} failed: "
                               f"{error.__class__.__name__}: {first_line}")

    def answer_streaming(self, messages: list[dict[str, str]]) -> ApiAnswer:
        """One answer, streamed: total latency and the arrival of the first content chunk."""
        import openai

        start = time.perf_counter()
        try:
            stream = self._request(messages, stream=True,
                                   **({"stream_options": {"include_usage": True}} if self.usage_in_stream else {}))
        except openai.BadRequestError:
            self.usage_in_stream = False  # an older server without stream_options: count chunks instead
            return self.answer_streaming(messages)
        first, parts, usage, chunks = None, [], None, 0
        try:
            for chunk in stream:
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
                for choice in chunk.choices or []:
                    if choice.delta and choice.delta.content:
                        first = first or time.perf_counter()
                        parts.append(choice.delta.content)
                        chunks += 1
        except openai.APIError as error:
            raise self._error(error) from None
        seconds = time.perf_counter() - start
        return ApiAnswer("".join(parts), seconds, None if first is None else first - start,
                         usage.prompt_tokens if usage else None, usage.completion_tokens if usage else chunks)

    def answer(self, messages: list[dict[str, str]]) -> ApiAnswer:
        start = time.perf_counter()
        response = self._request(messages)
        usage = response.usage
        text = (response.choices[0].message.content or "") if response.choices else ""
        return ApiAnswer(text, time.perf_counter() - start, None, usage.prompt_tokens if usage else None,
                         usage.completion_tokens if usage else None)


def cost_per_1000(prompt_tokens: int | None, completion_tokens: int | None, answers: int,
                  price_in: float | None, price_out: float | None) -> float | None:
    """USD (or the prices' currency) per 1,000 answers; None without prices or token counts."""
    if (price_in is None and price_out is None) or not answers:
        return None
    if (price_in is not None and prompt_tokens is None) or (price_out is not None and completion_tokens is None):
        return None
    total = (prompt_tokens or 0) * (price_in or 0.0) / 1e6 + (completion_tokens or 0) * (price_out or 0.0) / 1e6
    return total / answers * 1000


def evaluate_api(config: dict[str, Any], on_progress: Callable[[int, int], None]) -> tuple[list[dict], dict]:
    api = ApiModel(config)
    examples = config["examples"]
    batch_size = int(config.get("batch_size", 8))
    with_throughput = config.get("throughput", True)
    steps = len(examples) * (2 if with_throughput else 1)
    for example in examples[: config.get("warmup", 1)]:  # connection set-up and server warm-up: not timed
        api.answer_streaming(example["messages"])

    predictions, answers = [], []
    for i, example in enumerate(examples):
        answer = api.answer_streaming(example["messages"])
        answers.append(answer)
        predictions.append({"id": example["id"], "input": last_user_text(example["messages"]),
                            "prediction": answer.text, "reference": example["reference"], "latency_s": answer.seconds,
                            "ttft_s": answer.ttft, "output_tokens": answer.completion_tokens})
        on_progress(i + 1, steps)

    throughput: dict[str, Any] = {"throughput_batch_size": batch_size}
    if with_throughput:
        done = 0
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=batch_size) as pool:
            batch_answers = []
            for result in pool.map(lambda e: api.answer(e["messages"]), examples):
                batch_answers.append(result)
                done += 1
                on_progress(len(examples) + done, steps)
        elapsed = time.perf_counter() - start
        tokens = sum(a.completion_tokens or 0 for a in batch_answers)
        throughput.update(throughput_answers_per_s=len(examples) / elapsed if elapsed else None,
                          throughput_output_tokens_per_s=tokens / elapsed if elapsed and tokens else None,
                          throughput_seconds=elapsed)

    def total(name: str) -> int | None:
        values = [getattr(a, name) for a in answers]
        return None if any(v is None for v in values) else sum(values)

    prompt_tokens, completion_tokens = total("prompt_tokens"), total("completion_tokens")
    latencies = [a.seconds for a in answers]
    figures = {
        **latency_summary("latency", latencies),
        **latency_summary("ttft", [a.ttft for a in answers if a.ttft is not None]),
        "ttft_source": "first streamed content chunk, over the network",
        "output_tokens": completion_tokens,
        "output_tokens_per_s": completion_tokens / sum(latencies) if completion_tokens and sum(latencies) else None,
        "prompt_tokens": prompt_tokens,
        **throughput,
        "cost_per_1000_answers": cost_per_1000(prompt_tokens, completion_tokens, len(answers),
                                               config.get("price_per_million_input_tokens"),
                                               config.get("price_per_million_output_tokens")),
        "parameters": None,
        "size_on_disk_mb": None,
        "peak_memory_mb": None,
        "model_memory_mb": None,
        "peak_memory_kind": "remote (the server's memory cannot be measured from here)",
        "device": f"remote endpoint {config.get('base_url') or 'https://api.openai.com/v1'}",
        "network": True,
    }
    return predictions, figures
