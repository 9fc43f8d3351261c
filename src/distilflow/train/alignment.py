"""Teacher targets across tokenizers: the teacher's top-k pieces at its own tokens become targets at the student's
tokens, by aligning both tokenizations of the shared answer text on their byte offsets.

Following TRL's GOLD trainer (General Online Logit Distillation, experimental in TRL; "ULD with byte-offset
alignment") and Boizard et al. 2024, "Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss":

1. Spans. Teacher and student tokens of the answer are grouped into aligned spans, the smallest groups whose
   ends coincide in the text (a token ending inside a UTF-8 character is never a boundary).
2. Product rule. A span of one teacher token t and k student tokens s_1..s_k: the teacher gives the whole span
   probability p(t); the student's probability of the span is the product q(s_1) q(s_2|s_1) ... q(s_k|...).
   The targets are chosen so that their product along the span is p(t): at s_1 the mass of t (plus that of
   alternative pieces the student spells as exactly s_1), at s_2 p(t) / that mass, then 1 (the teacher's token
   fixes the rest of the span). The reverse, m teacher tokens and one student token s: the target of s is the
   product of the teacher's probabilities of t_1..t_m (what GOLD does when it merges a group's probabilities).
   Spans with several tokens on both sides get no target (counted, trained with cross-entropy only).
3. Alternatives. Each of the teacher's other top-k pieces at the span's first position is matched to the student
   token that spells it exactly (TokenMapper); pieces with no such token are the unmatched mass, left to the
   universal logit distance (ULD): the sorted unmatched probabilities against the student's largest
   probabilities outside the matched tokens (losses.py), since no token identity links them.

Written by hand: TRL's GOLD code aligns inside its trainer on full teacher logits and has no form for an API's
top-k text pieces or for stored targets; the alignment here feeds distilflow's chunked sparse loss.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

_ESCAPED_BYTES = re.compile(r"(?:\\x[0-9a-fA-F]{2})+")


@dataclass(frozen=True)
class TeacherPosition:
    """One teacher token of the answer: its piece of text and the teacher's top-k (piece, log-prob) there."""

    piece: str
    logprob: float
    alternatives: tuple[tuple[str, float], ...]


@dataclass
class AlignStats:
    """What the alignment could and could not carry over, summed over rows."""

    student_tokens: int = 0  # answer tokens of the student
    aligned_tokens: int = 0  # ... with a teacher target
    teacher_pieces: int = 0  # teacher top-k entries at the spans' first positions
    unmatched_pieces: int = 0  # ... with no student token that spells them (ULD)
    unmatched_mass: float = 0.0  # their probability, summed
    spans: int = 0  # spans with targets (each carries one teacher distribution)

    def add(self, other: AlignStats) -> None:
        for name in ("student_tokens", "aligned_tokens", "teacher_pieces", "unmatched_pieces", "unmatched_mass",
                     "spans"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def metrics(self) -> dict[str, float]:
        return {"aligned_student_tokens": self.aligned_tokens,
                "unaligned_student_tokens": self.student_tokens - self.aligned_tokens,
                "cross_tokenizer_teacher_pieces": self.teacher_pieces,
                "unmatched_teacher_pieces": self.unmatched_pieces,
                # The teacher's probability left to ULD, on average per aligned span.
                "unmatched_teacher_mass_share": round(self.unmatched_mass / max(1, self.spans), 4)}


@dataclass
class AlignedTargets:
    """Per student answer token: target ids (-1 = none), their log-probs, and the unmatched probabilities (ULD)."""

    ids: list[list[int]]
    logprobs: list[list[float]]
    unmatched: list[list[float]]
    stats: AlignStats = field(default_factory=AlignStats)


def piece_bytes(piece: str) -> bytes:
    """The bytes a piece stands for: escaped partial UTF-8 (`bytes:\\xe2\\x80`, `\\xe2\\x80`) or its text."""
    escaped = piece[6:] if piece.startswith("bytes:") else piece if _ESCAPED_BYTES.fullmatch(piece) else None
    if escaped is None:
        return piece.encode("utf-8")
    return bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-fA-F]{2})", escaped))


def recover_teacher_tokens(answer: str, pieces: list[list[str]], logprobs: list[list[float]]
                           ) -> list[TeacherPosition] | None:
    """The teacher's own tokens of `answer`, found by walking its bytes with each position's top-k pieces (an API
    returns the alternatives, not which one was sampled); None when the pieces do not spell the answer's start."""
    text, at, positions = answer.encode("utf-8"), 0, []
    for row_pieces, row_logprobs in zip(pieces, logprobs):
        if at >= len(text):
            break
        row = [(p, float(v)) for p, v in zip(row_pieces, row_logprobs) if p and v != -math.inf]
        if not positions:  # a stored answer is stripped: its first token may have lost its leading space
            row = [(p.lstrip() or p, v) for p, v in row]
        # The longest piece that continues the text: the sampled one (a shorter match is a prefix of it).
        fits = [(p, v) for p, v in row if piece_bytes(p) and text.startswith(piece_bytes(p), at)]
        if not fits:
            break
        piece, value = max(fits, key=lambda pv: len(piece_bytes(pv[0])))
        positions.append(TeacherPosition(piece, value, tuple(row)))
        at += len(piece_bytes(piece))
    return positions or None


def _byte_ends_of_teacher(positions: list[TeacherPosition]) -> list[int]:
    ends, at = [], 0
    for position in positions:
        at += len(piece_bytes(position.piece))
        ends.append(at)
    return ends


def _byte_ends_of_student(answer: str, offsets: list[tuple[int, int]]) -> list[float]:
    """Byte end of each student token in the answer; a token that ends inside a character (byte-level BPE splits
    it, both halves get the character's offsets) ends half a byte early, so it is never a boundary."""
    ends: list[float] = []
    for j, (start, end) in enumerate(offsets):
        byte_end = float(len(answer[:end].encode("utf-8")))
        if j + 1 < len(offsets) and offsets[j + 1][0] < end:
            byte_end = len(answer[:start].encode("utf-8")) + 0.5
        ends.append(byte_end)
    return ends


def spans(teacher_ends: list[int], student_ends: list[float]) -> list[tuple[range, range]]:
    """The smallest (teacher tokens, student tokens) groups whose ends coincide, in order; text one side covers
    and the other does not (a cut answer) forms no span."""
    out: list[tuple[range, range]] = []
    i = j = i0 = j0 = 0
    while i < len(teacher_ends) and j < len(student_ends):
        if teacher_ends[i] == student_ends[j]:
            out.append((range(i0, i + 1), range(j0, j + 1)))
            i0, j0 = i + 1, j + 1
            i, j = i0, j0
        elif teacher_ends[i] < student_ends[j]:
            i += 1
        else:
            j += 1
    return out


def align_answer(answer: str, teacher: list[TeacherPosition], student_ids: list[int],
                 student_offsets: list[tuple[int, int]], spell_one: Callable[[str], int | None]) -> AlignedTargets:
    """Targets at the student's answer tokens (`student_offsets`: character offsets within `answer`) from the
    teacher's tokens of the same answer. `spell_one(piece)`: the student token that is exactly that piece, or None."""
    n = len(student_ids)
    ids: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    unmatched: list[list[float]] = [[] for _ in range(n)]
    stats = AlignStats(student_tokens=n)
    for t_span, s_span in spans(_byte_ends_of_teacher(teacher), _byte_ends_of_student(answer, student_offsets)):
        if len(t_span) > 1 and len(s_span) > 1:
            continue  # neither side is one token: no product rule applies
        first, head = teacher[t_span[0]], s_span[0]
        path = sum(teacher[i].logprob for i in t_span)  # log of the product along the teacher's tokens
        matched: dict[int, float] = {student_ids[head]: path}
        for piece, value in first.alternatives:
            if piece == first.piece:
                continue
            stats.teacher_pieces += 1
            sid = spell_one(piece)
            if sid is None:
                stats.unmatched_pieces += 1
                stats.unmatched_mass += math.exp(value)
                unmatched[head].append(math.exp(value))
            else:
                matched[sid] = _logaddexp(matched[sid], value) if sid in matched else value
        stats.teacher_pieces += 1  # the teacher's own token, always matched through the path
        ids[head], logprobs[head] = list(matched), list(matched.values())
        unmatched[head].sort(reverse=True)
        for k, j in enumerate(s_span[1:]):
            # Conditionals whose product with the head's mass is p(t): p(t) / mass(s_1), then 1.
            ids[j], logprobs[j] = [student_ids[j]], [min(0.0, path - matched[student_ids[head]]) if k == 0 else 0.0]
        stats.aligned_tokens += len(s_span)
        stats.spans += 1
    return AlignedTargets(ids, logprobs, unmatched, stats)


def _logaddexp(a: float, b: float) -> float:
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))
