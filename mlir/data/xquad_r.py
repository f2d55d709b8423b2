"""XQuAD-R / MLQA-R (LAReQA): SQuAD-format JSON with sentence breaks, one file per language.

Three views of the same parse:

* :func:`read_xquad_r` -> :class:`ParallelCorpus` for training: one row per (question, language),
  positive = the sentence that contains the answer start (or the whole paragraph).
* :func:`read_xquad_r_candidates` -> :class:`XquadR` for LAReQA evaluation: per language, the
  candidate pool (*every* sentence of every paragraph) and, per question, the index of its relevant
  candidate in that language, plus the answer texts;
* :func:`xquad_r_to_mkqa_records` -> MKQA-format records (question -> its answer texts per language),
  so the MKQA protocol can be run on the same questions (benchmark type ``xquad_r_mkqa``).

:func:`read_squad` reads one *plain* SQuAD-format file (no sentence breaks: SQuAD, SQuADShifts) as a
one-language corpus whose positives are paragraphs: the paper's English validation set
(``data.val_corpus``, ``conf/data/val_corpus/squad.yaml``).

Group key (so splits never leak an article): the article's title in the reference language
(``en.json`` when the directory has it, read for titles even if English is not requested; else the
first requested language). Articles in other languages are tied to reference articles through shared
question ids, not through titles, because MLQA-R titles are translated; XQuAD-R's titles happen to be
English in all 11 files. Articles that share no id with the reference get ``"<lang>:<title>"``.
The key therefore does not depend on which languages are loaded.

Answer position: the first answer's ``answer_start`` selects the sentence whose ``[start, end)``
break contains it. A start that falls between two sentences (whitespace) is given to the next
sentence, one past the last sentence to the last one (counted in ``meta["answer_start_snapped"]``);
a start outside the context drops the question (``meta["questions_skipped"]``).

Validation: malformed ``sentence_breaks`` (count differs from ``sentences``, offsets out of range,
empty, decreasing or overlapping) raise :class:`DataError` naming ``file:data[a].paragraphs[p]``. A
break whose context slice differs from its sentence (after strip) also raises, unless the two are
near-identical (``difflib`` ratio >= 0.9, e.g. an encoding glitch shifting offsets by a character or
two): those are counted in ``meta["sentence_text_mismatches"]`` with their paths. The official
``tr.json`` has one such paragraph (``data[9].paragraphs[3]``: mojibake in the context shifts two
breaks by two characters). ``strict=True`` makes any mismatch an error.

Texts (questions, sentences, paragraphs, answers) are returned without U+FEFF byte-order marks and
surrounding whitespace; offsets are only used while parsing. Candidates are not de-duplicated: a few
languages repeat a sentence verbatim in two paragraphs, and LAReQA keeps both as separate candidates.
"""

from __future__ import annotations

import bisect
import difflib
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlir.core.errors import ConfigError, DataError
from mlir.data.corpus import ParallelCorpus
from mlir.data.io import read_json_file

XQUAD_R_LANGS = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
REFERENCE_LANG = "en"
_NEAR_MATCH = 0.9
CandidateMode = str  # "sentence" | "sentence_context" | "paragraph"


@dataclass
class XquadRLang:
    """One language of XQuAD-R: its questions and its candidate pool.

    Question lists are aligned with each other (file order); candidate lists are aligned with each
    other (file order: article, paragraph, sentence).

    Attributes:
        lang, path: language code and the file it came from.
        ids: question ids (parallel across languages: the same id is the same question).
        questions: question texts.
        answers: all answer texts of each question (the first located the relevant sentence).
        answer_starts: their character offsets in the paragraph.
        groups: the article key of each question.
        relevant: int64 ``[n_questions]``, index into ``sentences`` of the sentence holding the answer.
        sentences: every sentence of every paragraph (the LAReQA candidate pool for this language).
        contexts: per candidate, the paragraph text it comes from.
        candidate_groups: per candidate, the article key.
        candidate_paragraph: int64 per candidate, paragraph number in file order (0-based).
        question_paragraph: int64 per question, the paragraph number of its context.
    """

    lang: str
    path: str
    ids: list[str]
    questions: list[str]
    answers: list[list[str]]
    answer_starts: list[list[int]]
    groups: list[str]
    relevant: np.ndarray
    sentences: list[str]
    contexts: list[str]
    candidate_groups: list[str]
    candidate_paragraph: np.ndarray
    question_paragraph: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def candidate_texts(self, mode: CandidateMode = "sentence", sep: str = " ") -> list[str]:
        """Candidate texts to encode: the sentence, ``sentence + sep + paragraph``, or the paragraph."""
        if mode == "sentence":
            return list(self.sentences)
        if mode == "sentence_context":
            return [s + sep + c for s, c in zip(self.sentences, self.contexts)]
        if mode == "paragraph":
            return list(self.contexts)
        raise ConfigError(
            f"unknown candidate mode {mode!r}; use 'sentence', 'sentence_context' or 'paragraph'",
            where="mode",
        )

    def relevant_by_id(self) -> dict[str, int]:
        """Question id -> index of its relevant candidate in this language."""
        return dict(zip(self.ids, self.relevant.tolist()))

    def positive(self, i: int) -> str:
        """The relevant sentence of question ``i``."""
        return self.sentences[int(self.relevant[i])]


@dataclass
class XquadR:
    """All languages of one XQuAD-R / MLQA-R directory.

    ``by_lang[lang]`` is an :class:`XquadRLang`. The LAReQA protocol: a question in language X is
    relevant to ``by_lang[L].relevant_by_id()[qid]`` for every language L that has ``qid``; the pool is
    the union of all languages' ``sentences``.
    """

    directory: str
    langs: list[str]
    by_lang: dict[str, XquadRLang]
    meta: dict = field(default_factory=dict)

    def __getitem__(self, lang: str) -> XquadRLang:
        return self.by_lang[lang]

    @property
    def groups(self) -> list[str]:
        """Sorted article keys present in any language."""
        return sorted({g for d in self.by_lang.values() for g in d.candidate_groups})

    def ids(self) -> list[str]:
        """Question ids in the first language's order, then any ids only other languages have."""
        seen: dict[str, None] = {}
        for lang in self.langs:
            seen.update(dict.fromkeys(self.by_lang[lang].ids))
        return list(seen)

    def restrict_groups(self, groups: Iterable[str]) -> XquadR:
        """Only the questions *and candidates* of these articles (e.g. held-out evaluation articles)."""
        keep = set(groups)
        unknown = keep - set(self.groups)
        if unknown:
            raise ConfigError(
                f"unknown article group(s) {sorted(unknown)[:5]}; known e.g. {self.groups[:3]}",
                where="groups",
            )
        out = {lang: _restrict(d, keep) for lang, d in self.by_lang.items()}
        meta = dict(self.meta, restricted_to_groups=sorted(keep))
        return XquadR(self.directory, list(self.langs), out, meta)

    def to_corpus(self, positive: str = "sentence", name: str = "xquad_r") -> ParallelCorpus:
        """Training rows: (question id, lang, question, positive, [], article key)."""
        if positive not in ("sentence", "paragraph"):
            raise ConfigError(
                f"positive must be 'sentence' or 'paragraph', got {positive!r}", where="positive"
            )
        rows = []
        for lang in self.langs:
            d = self.by_lang[lang]
            for i, qid in enumerate(d.ids):
                c = int(d.relevant[i])
                text = d.sentences[c] if positive == "sentence" else d.contexts[c]
                rows.append(
                    {"id": qid, "lang": lang, "query": d.questions[i], "positive": text, "group": d.groups[i]}
                )
        corpus = ParallelCorpus.from_rows(rows, name=name)
        corpus.meta.update(self.meta, positive=positive)
        return corpus


def _restrict(d: XquadRLang, keep: set[str]) -> XquadRLang:
    cand = [i for i, g in enumerate(d.candidate_groups) if g in keep]
    remap = np.full(len(d.sentences), -1, dtype=np.int64)
    remap[cand] = np.arange(len(cand))
    qs = [i for i, g in enumerate(d.groups) if g in keep]

    def pick(xs: Sequence, idx: list[int]) -> list:
        return [xs[i] for i in idx]

    return XquadRLang(
        lang=d.lang,
        path=d.path,
        ids=pick(d.ids, qs),
        questions=pick(d.questions, qs),
        answers=pick(d.answers, qs),
        answer_starts=pick(d.answer_starts, qs),
        groups=pick(d.groups, qs),
        relevant=remap[d.relevant[qs]] if qs else np.zeros(0, np.int64),
        sentences=pick(d.sentences, cand),
        contexts=pick(d.contexts, cand),
        candidate_groups=pick(d.candidate_groups, cand),
        candidate_paragraph=d.candidate_paragraph[cand] if cand else np.zeros(0, np.int64),
        question_paragraph=d.question_paragraph[qs] if qs else np.zeros(0, np.int64),
    )


# ----------------------------------------------------------------------------------------------- parse


@dataclass
class _Article:
    title: str
    ids: list[str]


@dataclass
class _Parsed:
    """One file, validated; groups are filled in afterwards (they need the reference language)."""

    lang: str
    path: str
    articles: list[_Article]
    q_article: list[int]
    d: XquadRLang
    c_article: list[int]
    counts: Counter
    mismatches: list[str]


def _clean(s: str) -> str:
    """Drop byte-order marks (a few files have U+FEFF inside texts) and surrounding whitespace."""
    return s.replace("\ufeff", "").strip()


def _fail(msg: str, path: Path, jpath: str) -> DataError:
    return DataError(msg, where=f"{path}:{jpath}")


def _expect(obj, typ: type, what: str, path: Path, jpath: str):
    if not isinstance(obj, typ) or isinstance(obj, bool):
        raise _fail(f"{what} must be a {typ.__name__}, got {type(obj).__name__}", path, jpath)
    return obj


def _short(s: str, n: int = 60) -> str:
    return repr(s if len(s) <= n else s[: n - 1] + "…")


def _check_breaks(
    p: dict, path: Path, jpath: str, strict: bool, mismatches: list[str]
) -> list[tuple[int, int]]:
    ctx = p["context"]
    sents = p.get("sentences")
    breaks = p.get("sentence_breaks")
    if sents is None or breaks is None:
        raise _fail(
            "paragraph lacks 'sentences'/'sentence_breaks' (plain SQuAD, not the LAReQA XQuAD-R/MLQA-R files)",
            path,
            jpath,
        )
    _expect(sents, list, "'sentences'", path, jpath)
    _expect(breaks, list, "'sentence_breaks'", path, jpath)
    if len(sents) != len(breaks):
        raise _fail(f"{len(sents)} sentences but {len(breaks)} sentence_breaks", path, jpath)
    if not sents:
        raise _fail("paragraph has no sentences", path, jpath)
    out: list[tuple[int, int]] = []
    prev_end = 0
    for k, (s, b) in enumerate(zip(sents, breaks)):
        if not isinstance(s, str) or not s.strip():
            raise _fail(f"sentences[{k}] is not a non-empty string", path, jpath)
        if (
            not isinstance(b, list)
            or len(b) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in b)
        ):
            raise _fail(f"sentence_breaks[{k}] must be [start, end] integers, got {b!r}", path, jpath)
        start, end = b
        if not (0 <= start < end <= len(ctx)):
            raise _fail(
                f"sentence_breaks[{k}] = [{start}, {end}] is outside the context (length {len(ctx)}) or empty",
                path,
                jpath,
            )
        if start < prev_end:
            raise _fail(
                f"sentence_breaks[{k}] = [{start}, {end}] overlaps or precedes the previous break (ends at {prev_end})",
                path,
                jpath,
            )
        prev_end = end
        got, want = ctx[start:end].strip(), s.strip()
        if got != want:
            ratio = difflib.SequenceMatcher(None, got, want, autojunk=False).ratio()
            if strict or ratio < _NEAR_MATCH:
                raise _fail(
                    f"sentence_breaks[{k}] = [{start}, {end}] selects {_short(got)} but sentences[{k}] is "
                    f"{_short(want)}",
                    path,
                    jpath,
                )
            mismatches.append(f"{jpath}.sentence_breaks[{k}]")
        out.append((start, end))
    return out


def _checked_question(qa, path: Path, jq: str, seen_ids: dict[str, str]) -> tuple[str, str, list | None]:
    """A question's id, text and ``answers`` list (``None`` when it has none), checked."""
    _expect(qa, dict, "question", path, jq)
    qid = qa.get("id")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
        raise _fail("question lacks a string 'id'", path, jq)
    qid = str(qid)
    if qid in seen_ids:
        raise _fail(f"duplicate question id {qid!r} (first at {seen_ids[qid]})", path, jq)
    seen_ids[qid] = jq
    text = qa.get("question")
    if not isinstance(text, str) or not text.strip():
        raise _fail("'question' is missing, empty or whitespace-only", path, jq)
    ans = qa.get("answers")
    return qid, text, ans if isinstance(ans, list) and ans else None


def _checked_answers(ans: list, path: Path, jq: str) -> tuple[list[str], list[int]]:
    """The texts and ``answer_start`` offsets of a question's answers, checked."""
    a_texts, a_starts = [], []
    for k, a in enumerate(ans):
        if (
            not isinstance(a, dict)
            or not isinstance(a.get("text"), str)
            or not isinstance(a.get("answer_start"), int)
            or isinstance(a.get("answer_start"), bool)
        ):
            raise _fail(f"answers[{k}] must have a string 'text' and an integer 'answer_start'", path, jq)
        a_texts.append(a["text"])
        a_starts.append(a["answer_start"])
    return a_texts, a_starts


def _answer_sentence(breaks: list[tuple[int, int]], start: int, counts: Counter) -> int:
    """The sentence whose break holds character ``start``: one in a gap goes to the next sentence, one
    past the last sentence to the last one (both counted as ``answer_start_snapped``)."""
    k = bisect.bisect_right([e for _, e in breaks], start)  # first sentence ending after start
    if k >= len(breaks):
        k = len(breaks) - 1
        counts["answer_start_snapped"] += 1
    elif start < breaks[k][0]:
        counts["answer_start_snapped"] += 1
    return k


@dataclass
class _FileParse:
    """One file's parse in progress: per-question and per-candidate columns (file order) and counts."""

    path: Path
    strict: bool
    counts: Counter = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)
    seen_ids: dict[str, str] = field(default_factory=dict)
    n_par: int = 0
    # per question
    ids: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    answers: list[list[str]] = field(default_factory=list)
    starts: list[list[int]] = field(default_factory=list)
    q_article: list[int] = field(default_factory=list)
    q_par: list[int] = field(default_factory=list)
    relevant: list[int] = field(default_factory=list)
    # per candidate sentence
    sentences: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    c_article: list[int] = field(default_factory=list)
    c_par: list[int] = field(default_factory=list)

    def paragraph(self, p, jp: str, ai: int, article: _Article) -> None:
        """Add paragraph ``p`` of article ``ai``: its sentences as candidates, then its questions."""
        path = self.path
        _expect(p, dict, "paragraph", path, jp)
        ctx = _expect(p.get("context"), str, "'context'", path, jp)
        breaks = _check_breaks(p, path, jp, self.strict, self.mismatches)
        first_cand = len(self.sentences)
        self.sentences.extend(_clean(x) for x in p["sentences"])
        self.contexts.extend([_clean(ctx)] * len(breaks))
        self.c_article.extend([ai] * len(breaks))
        self.c_par.extend([self.n_par] * len(breaks))
        for qi, qa in enumerate(_expect(p.get("qas", []), list, "'qas'", path, jp)):
            jq = f"{jp}.qas[{qi}]"
            qid, text, ans = _checked_question(qa, path, jq, self.seen_ids)
            if ans is None:
                self.counts["questions_without_answer"] += 1
                continue
            a_texts, a_starts = _checked_answers(ans, path, jq)
            st = a_starts[0]
            if not 0 <= st < len(ctx):
                self.counts["questions_skipped"] += 1
                continue
            if ctx[st : st + len(a_texts[0])] != a_texts[0]:
                self.counts["answer_text_offset_mismatch"] += 1
            k = _answer_sentence(breaks, st, self.counts)
            self.ids.append(qid)
            self.questions.append(_clean(text))
            self.answers.append([_clean(a) for a in a_texts])
            self.starts.append(a_starts)
            self.q_article.append(ai)
            self.q_par.append(self.n_par)
            self.relevant.append(first_cand + k)
            article.ids.append(qid)
        self.n_par += 1

    def language(self, lang: str) -> XquadRLang:
        """The columns as an :class:`XquadRLang` (groups are assigned later, by :func:`_assign_groups`)."""
        return XquadRLang(
            lang=lang,
            path=str(self.path),
            ids=self.ids,
            questions=self.questions,
            answers=self.answers,
            answer_starts=self.starts,
            groups=[],
            relevant=np.asarray(self.relevant, dtype=np.int64),
            sentences=self.sentences,
            contexts=self.contexts,
            candidate_groups=[],
            candidate_paragraph=np.asarray(self.c_par, dtype=np.int64),
            question_paragraph=np.asarray(self.q_par, dtype=np.int64),
        )


def _parse_file(path: Path, lang: str, strict: bool) -> _Parsed:
    """Read and validate one ``{lang}.json``: articles, candidates and questions in file order."""
    doc = read_json_file(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError("expected a SQuAD-format object with a 'data' list", where=str(path))
    parse = _FileParse(path, strict)
    articles: list[_Article] = []
    for ai, art in enumerate(doc["data"]):
        ja = f"data[{ai}]"
        _expect(art, dict, "article", path, ja)
        title = art.get("title")
        title = title if isinstance(title, str) and title.strip() else f"article{ai}"
        article = _Article(title, [])
        articles.append(article)
        for pi, p in enumerate(_expect(art.get("paragraphs"), list, "'paragraphs'", path, ja)):
            parse.paragraph(p, f"{ja}.paragraphs[{pi}]", ai, article)
    parse.counts["articles"] = len(articles)
    parse.counts["paragraphs"] = parse.n_par
    return _Parsed(
        lang,
        str(path),
        articles,
        parse.q_article,
        parse.language(lang),
        parse.c_article,
        parse.counts,
        parse.mismatches,
    )


def _titles_of_reference(ref: _Parsed | None) -> dict[str, str]:
    if ref is None:
        return {}
    return {qid: a.title for a in ref.articles for qid in a.ids}


def _assign_groups(parsed: dict[str, _Parsed], ref: _Parsed | None) -> dict:
    """Article key per article per language, tied to the reference language through question ids."""
    qid_title = _titles_of_reference(ref)
    titles_agree = True
    for p in parsed.values():
        keys = []
        for art in p.articles:
            ref_titles = sorted({qid_title[q] for q in art.ids if q in qid_title})
            if ref is not None and p.lang == ref.lang:
                key = art.title
            elif ref_titles:
                key = "|".join(ref_titles)
            else:
                key = f"{p.lang}:{art.title}"
            if key != art.title:
                titles_agree = False
            keys.append(key)
        p.d.groups = [keys[a] for a in p.q_article]
        p.d.candidate_groups = [keys[a] for a in p.c_article]
    return {"reference_lang": ref.lang if ref else None, "titles_agree_across_langs": titles_agree}


def _resolve_langs(directory: Path, langs: Sequence[str] | None) -> list[str]:
    if not directory.is_dir():
        raise DataError(
            "XQuAD-R directory not found; set MLIR_DATA_DIR or pass the folder holding {lang}.json",
            where=str(directory),
        )
    available = sorted(p.stem for p in directory.glob("*.json"))
    if langs is None:
        if not available:
            raise DataError("no {lang}.json files in this directory", where=str(directory))
        return available
    langs = list(dict.fromkeys(langs))
    missing = [lang for lang in langs if not (directory / f"{lang}.json").is_file()]
    if missing:
        raise DataError(
            f"no file for language(s) {missing} (available: {available or 'none'})", where=str(directory)
        )
    return langs


def read_xquad_r_candidates(
    directory: str | os.PathLike,
    langs: Sequence[str] | None = None,
    *,
    strict: bool = False,
) -> XquadR:
    """Parse ``directory/{lang}.json`` for each language (default: every ``*.json`` there).

    Returns the :class:`XquadR` evaluation structure; ``meta`` has per-language counts, the
    tolerated sentence-break mismatches and how groups were keyed.
    """
    directory = Path(directory)
    langs = _resolve_langs(directory, langs)
    parsed = {lang: _parse_file(directory / f"{lang}.json", lang, strict) for lang in langs}
    if REFERENCE_LANG in parsed:
        ref = parsed[REFERENCE_LANG]
    elif (directory / f"{REFERENCE_LANG}.json").is_file():
        ref = _parse_file(directory / f"{REFERENCE_LANG}.json", REFERENCE_LANG, strict)
    else:
        ref = parsed[langs[0]]
    meta: dict = {"source": str(directory), "per_lang": {}, "sentence_text_mismatches": {}}
    meta.update(_assign_groups(parsed, ref))
    for lang, p in parsed.items():
        c = p.counts
        meta["per_lang"][lang] = {
            "questions": len(p.d.ids),
            "candidates": len(p.d.sentences),
            "articles": c["articles"],
            "paragraphs": c["paragraphs"],
            "questions_skipped": c["questions_skipped"],
            "questions_without_answer": c["questions_without_answer"],
            "answer_start_snapped": c["answer_start_snapped"],
            "answer_text_offset_mismatch": c["answer_text_offset_mismatch"],
        }
        if p.mismatches:
            meta["sentence_text_mismatches"][lang] = p.mismatches
    return XquadR(str(directory), langs, {lang: parsed[lang].d for lang in langs}, meta)


def read_xquad_r(
    directory: str | os.PathLike,
    langs: Sequence[str] | None = None,
    positive: str = "sentence",
    name: str = "xquad_r",
    *,
    strict: bool = False,
) -> ParallelCorpus:
    """XQuAD-R / MLQA-R as a training :class:`ParallelCorpus` (id = question id, group = article key).

    ``positive="sentence"`` uses the answer-bearing sentence, ``"paragraph"`` the whole paragraph.
    """
    if positive not in ("sentence", "paragraph"):
        raise ConfigError(f"positive must be 'sentence' or 'paragraph', got {positive!r}", where="positive")
    return read_xquad_r_candidates(directory, langs, strict=strict).to_corpus(positive=positive, name=name)


def read_squad(path: str | os.PathLike, lang: str = "en", name: str | None = None) -> ParallelCorpus:
    """One plain SQuAD-format JSON file (SQuAD v1.1 / v2.0, SQuADShifts) as a one-language corpus.

    Rows: id = question id, query = question, positive = its paragraph (plain SQuAD has no sentence
    breaks, so the paragraph is the retrieval unit), group = article title. Questions without an
    answer (SQuAD 2.0's unanswerable ones) have no positive and are skipped, counted in
    ``meta["questions_without_answer"]``. Questions of one paragraph share their positive text; the
    sampler puts at most one of them in a batch, so none is another's false negative.
    """
    from mlir.data.jsonl import normalize_lang

    path = Path(path)
    doc = read_json_file(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError("expected a SQuAD-format object with a 'data' list", where=str(path))
    lang, rows, seen, skipped = normalize_lang(str(lang)), [], {}, 0
    for ai, art in enumerate(doc["data"]):
        ja = f"data[{ai}]"
        _expect(art, dict, "article", path, ja)
        title = art.get("title")
        group = title.strip() if isinstance(title, str) and title.strip() else f"article{ai}"
        for pi, p in enumerate(_expect(art.get("paragraphs"), list, "'paragraphs'", path, ja)):
            jp = f"{ja}.paragraphs[{pi}]"
            _expect(p, dict, "paragraph", path, jp)
            ctx = _clean(_expect(p.get("context"), str, "'context'", path, jp))
            if not ctx:
                raise _fail("'context' is empty", path, jp)
            for qi, qa in enumerate(_expect(p.get("qas", []), list, "'qas'", path, jp)):
                qid, text, ans = _checked_question(qa, path, f"{jp}.qas[{qi}]", seen)
                if ans is None:
                    skipped += 1
                    continue
                row = {"id": qid, "lang": lang, "query": _clean(text), "positive": ctx, "group": group}
                rows.append(row)
    if not rows:
        raise DataError("no answerable questions in this SQuAD-format file", where=str(path))
    corpus = ParallelCorpus.from_rows(rows, name=name or path.name.split(".")[0])
    corpus.meta.update(source=str(path), rows=len(rows), questions_without_answer=skipped)
    return corpus


def xquad_r_to_mkqa_records(
    xquad: XquadR | str | os.PathLike,
    langs: Sequence[str] | None = None,
    *,
    lang_map: Mapping[str, str] | None = None,
    query_lang: str = "en",
    answer_type: str = "short_phrase",
) -> list[dict]:
    """XQuAD-R (an :class:`XquadR` or its directory) as official-format MKQA records.

    One record per question id: ``example_id`` = the question id, ``query`` = the ``query_lang``
    question (else the first language's), ``queries[lang]`` the question in each language that has it,
    ``answers[lang]`` one ``{"type": answer_type, "text": t, "aliases": []}`` per distinct answer text.
    Language codes are XQuAD-R's unless ``lang_map`` renames them (e.g. ``{"zh": "zh_cn"}`` to match
    MKQA's code for Simplified Chinese).
    """
    data = xquad if isinstance(xquad, XquadR) else read_xquad_r_candidates(xquad, langs)
    use = list(langs) if langs is not None else list(data.langs)
    missing = [lang for lang in use if lang not in data.by_lang]
    if missing:
        raise ConfigError(f"language(s) {missing} not loaded; have {data.langs}", where="langs")
    rename = dict(lang_map or {})
    index = {lang: {qid: i for i, qid in enumerate(data[lang].ids)} for lang in use}
    records = []
    for qid in data.ids():
        queries, answers = {}, {}
        for lang in use:
            i = index[lang].get(qid)
            if i is None:
                continue
            d = data[lang]
            key = rename.get(lang, lang)
            queries[key] = d.questions[i]
            answers[key] = [
                {"type": answer_type, "text": t, "aliases": []} for t in dict.fromkeys(d.answers[i]) if t
            ]
        if not queries:
            continue
        q_key = rename.get(query_lang, query_lang)
        query = queries.get(q_key, next(iter(queries.values())))
        records.append({"example_id": qid, "query": query, "queries": queries, "answers": answers})
    return records
