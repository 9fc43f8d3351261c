"""Keeping secrets off the disk and out of messages.

A spec names secrets, it never holds them: `api_key_env: NAME`, header values as `{env: NAME}`. The values are read
from the environment when a request is made (`read_env_secret`), remembered here for this process only, and
`scrub` replaces every remembered value (and anything shaped like a known key) by *** in text that may reach a
terminal, a log, the job store or a report.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlsplit

from distilflow.errors import SpecError

# Prefixes of API keys and tokens of common providers (OpenAI/Anthropic sk-, Hugging Face hf_, Groq gsk_, xAI,
# Google AIza, GitHub, GitLab, Replicate, Perplexity, NVIDIA, AWS access keys, Slack, Stripe).
KEY_PREFIXES = ("sk-", "sk_", "hf_", "gsk_", "xai-", "AIza", "ghp_", "gho_", "github_pat_", "glpat-", "r8_",
                "pplx-", "nvapi-", "AKIA", "ASIA", "xoxb-", "xoxp-", "rk_live_", "pk_live_")
_KEY_SHAPED = re.compile(r"\b(?:%s)[A-Za-z0-9_\-]{8,}" % "|".join(re.escape(p) for p in KEY_PREFIXES))
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Header names whose values are credentials: only {env: NAME} references are accepted for them.
SECRET_HEADER = re.compile(r"authorization|api[-_]?key|token|secret|password|cookie|signature", re.IGNORECASE)
SECRET_QUERY = re.compile(r"key|token|secret|sig|signature|password|code|auth", re.IGNORECASE)

_known: set[str] = set()


def looks_like_a_key(value: str) -> bool:
    """A known key prefix, or a long run mixing upper case, lower case and digits (real variable names are words)."""
    if value.startswith(KEY_PREFIXES):
        return True
    return (len(value) >= 24 and any(c.islower() for c in value) and any(c.isupper() for c in value)
            and sum(c.isdigit() for c in value) >= 3)


def check_env_name(value: str, where: str) -> str:
    """`value` must name an environment variable; a key pasted in its place is refused without echoing it."""
    if looks_like_a_key(value) or not ENV_NAME.fullmatch(value):
        raise ValueError(f"{where} must be the NAME of an environment variable (like OPENAI_API_KEY), not the key "
                         "itself; the value was not stored")
    return value


def check_plain_header(name: str, value: str) -> None:
    if SECRET_HEADER.search(name) or looks_like_a_key(value):
        raise ValueError(f"header {name!r} carries a credential: give it as {{env: VARIABLE_NAME}} so that the "
                         "value is read from the environment and never stored; the value was not stored")


def check_url(url: str, where: str) -> None:
    """No credentials inside a URL (user:token@host, ?api-key=...): they would be stored with the spec."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValueError(f"{where} holds credentials (user:password@): put the key in api_key_env or a header "
                         "given as {env: NAME}; the URL was not stored")
    for key, _ in parse_qsl(parts.query):
        if SECRET_QUERY.search(key):
            raise ValueError(f"{where} has a credential in its query ({key}=...): give it as api_key_env or a header "
                             "{env: NAME}; the URL was not stored")


def read_env_secret(name: str, what: str) -> str:
    """The value of environment variable `name` (remembered for scrubbing); one sentence when it is not set."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise SpecError(f"{what}: the environment variable {name} is not set (export {name}=... before running)")
    remember(value)
    return value


def remember(value: str) -> None:
    if len(value) >= 4:  # a 1-3 character "secret" would turn ordinary words into ***
        _known.add(value)


def scrub(text: str) -> str:
    """`text` with every secret this process has read, and anything shaped like a known key, replaced by ***."""
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _KEY_SHAPED.sub("***", text)
