"""LongBench metrics, task registry and loader on hand-made examples (no network, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from namm.tasks import longbench as lb
from namm.tasks import metrics as m

FIXTURES = Path(__file__).parent / "data" / "longbench"


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give a test private copies of the registries so that registering leaks nowhere."""
    monkeypatch.setattr(m, "METRICS", dict(m.METRICS))
    monkeypatch.setattr(m, "TASK_METRICS", dict(m.TASK_METRICS))
    monkeypatch.setattr(m, "FIRST_LINE_TASKS", set(m.FIRST_LINE_TASKS))
    monkeypatch.setattr(lb, "TASKS", dict(lb.TASKS))


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]  # str rows go in verbatim
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def example(**overrides) -> dict:
    return {"input": "Who?", "context": "Alice met Bob.", "answers": ["Alice"], **overrides}


# --------------------------------------------------------------------------- metrics

def test_qa_f1_normalises_case_punctuation_and_articles() -> None:
    # "The cat sat on the mat." -> [cat, sat, on, mat]
    # "A cat, sitting on a mat!" -> [cat, sitting, on, mat]; 3 shared: P = R = 3/4, F1 = 0.75
    assert m.qa_f1_score("The cat sat on the mat.", "A cat, sitting on a mat!") == pytest.approx(0.75)
    assert m.qa_f1_score("Paris", "paris.") == 1.0
    assert m.qa_f1_score("", "Paris") == 0.0
    # articles only go as whole words: "theory" stays, "an" goes -> [theory] vs [theory]
    assert m.qa_f1_score("an theory", "Theory") == 1.0


def test_rouge_l_matches_the_rouge_package_definition() -> None:
    # one sentence each: distinct words m = n = 5; LCS "the cat on the mat" has the distinct words
    # {the, cat, on, mat} = 4, so R = P = 4/5 and F = 2PR / (P + R + 1e-8) ~= 0.8
    f = m.rouge_score("the cat sat on the mat", "the cat is on the mat")
    assert f == pytest.approx(0.8, abs=1e-6)
    # summary level: sentences split on "."; ref [a c], [b d] vs hyp [a b], [c d]; the union of the
    # per-pair LCS words is {a, c} | {b, d} = 4 of 4 distinct words, so F = 1 (a flat LCS would give 3/4)
    assert m.rouge_score("a b. c d", "a c. b d") == pytest.approx(1.0, abs=1e-6)
    # counts are over distinct words: "the the the" vs "the" -> 1/1 and 1/1
    assert m.rouge_score("the the the", "the") == pytest.approx(1.0, abs=1e-6)
    assert m.rouge_score("The", "the") == 0.0  # case is kept
    assert m.rouge_score("", "a summary") == 0.0  # the package raises on empty input; LongBench scores 0
    assert m.rouge_score("...", "a summary") == 0.0


def test_retrieval_and_count_take_the_share_of_right_numbers() -> None:
    assert m.retrieval_score("Paragraph 12", "Paragraph 12") == 1.0
    # numbers [3, 12], one of them right -> 1/2
    assert m.retrieval_score("Paragraph 3 or Paragraph 12", "Paragraph 12") == 0.5
    assert m.retrieval_score("I do not know", "Paragraph 12") == 0.0
    assert m.retrieval_zh_score("答案是段落5", "段落5") == 1.0
    with pytest.raises(ValueError, match="Paragraph"):
        m.retrieval_score("Paragraph 1", "1")
    # numbers [7, 10], one equal to 7 -> 1/2
    assert m.count_score("There are 7 unique paragraphs out of 10", "7") == 0.5
    assert m.count_score("seven", "7") == 0.0


def test_code_sim_scores_the_first_line_that_is_not_a_comment() -> None:
    pred = "\n# a comment\n// another\n```python\nx = compute(a)\nmore()"
    assert m.code_sim_score(pred, "x = compute(a)") == 1.0
    # "return x" vs "return y": difflib finds 7 matching chars of 16 -> 87.5 -> round() -> 88
    assert m.code_sim_score("\n\nreturn x", "return y") == 0.88
    assert m.code_sim_score("# only comments", "return y") == 0.0  # nothing left -> "" -> 0


def test_classification_counts_matches_and_forgives_substrings_of_the_truth() -> None:
    classes = ["Location", "Description", "Entity"]
    assert m.classification_score("Location", "Location", all_classes=classes) == 1.0
    # two classes named, one right -> 1/2
    assert m.classification_score("Location or Entity", "Location", all_classes=classes) == 0.5
    assert m.classification_score("Entity", "Location", all_classes=classes) == 0.0
    # "location" is part of the truth "Other location", so it does not dilute the score
    both = ["location", "Other location"]
    assert m.classification_score("Other location", "Other location", all_classes=both) == 1.0
    with pytest.raises(ValueError, match="all_classes"):
        m.classification_score("Location", "Location")


def test_score_applies_first_line_rule_for_trec() -> None:
    classes = ["Location", "Description", "Entity"]
    pred = ["\nLocation\nDescription"]
    # trec keeps the first line "Location" -> 1 class, right -> 100
    assert m.score("trec", pred, [["Location"]], classes) == 100.0
    # without the rule both "Location" and "Description" are named -> 1/2 -> 50
    assert m.score("classification", pred, [["Location"]], classes) == 50.0
    assert m.score("trec", pred, [["Location"]], classes, first_line_only=False) == 50.0
    # triviaqa: "Paris\nQuestion: ..." is cut to "Paris"
    assert m.score("triviaqa", ["Paris\nQuestion: capital of Spain?"], [["Paris"]]) == 100.0


def test_score_takes_the_best_ground_truth_and_averages() -> None:
    # ex 1: "barack obama" vs "obama" -> P = 1/2, R = 1, F1 = 2/3; vs "Barack Obama" -> 1; max = 1
    # ex 2: no overlap -> 0. Mean 0.5 -> 50
    preds = ["Barack Obama", "George Bush"]
    answers = [["Obama", "Barack Obama"], ["Clinton"]]
    assert m.score("hotpotqa", preds, answers) == pytest.approx(50.0)
    assert m.score("qa_f1", ["Barack Obama"], [["Obama"]]) == pytest.approx(100 * 2 / 3)
    # per example (what `namm compare` pairs): 0..1, best truth each, in order
    assert m.example_scores("hotpotqa", preds, answers) == pytest.approx([1.0, 0.0])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        m.score("hotpotqa", preds, answers[:1])
    with pytest.raises(ValueError, match="list of strings"):
        m.score("hotpotqa", ["x"], ["x"])
    with pytest.raises(ValueError, match="unknown metric or task 'nope'"):
        m.score("nope", ["x"], [["x"]])


def test_chinese_metrics_segment_words_with_jieba() -> None:
    pytest.importorskip("jieba")
    # "北京。" -> [北京, 。]; "。" normalises to "" and is dropped -> [北京] vs [北京]
    assert m.qa_f1_zh_score("北京", "北京。") == 1.0
    # [我, 来到, 北京, 清华大学] vs [清华大学]: P = 1/4, R = 1, F1 = 0.4
    assert m.qa_f1_zh_score("我来到北京清华大学", "清华大学") == pytest.approx(0.4)
    # Rouge over words: hyp {我, 来到, 北京, 清华大学}, ref {我, 来到, 清华大学}, LCS 3
    # -> R = 1, P = 3/4, F = 6/7
    assert m.rouge_zh_score("我来到北京清华大学", "我来到清华大学") == pytest.approx(6 / 7, abs=1e-6)


# --------------------------------------------------------------------------- tasks and prompts

def test_registry_has_the_21_official_tasks() -> None:
    assert len(lb.OFFICIAL_TASKS) == 21 and set(lb.OFFICIAL_TASKS) <= set(lb.TASKS)
    spec = lb.TASKS["gov_report"]
    assert (spec.metric, spec.max_new_tokens, spec.language) == ("rouge", 512, "en")
    assert lb.TASKS["repobench-p"].prompt.endswith("{context}{input}Next line of code:\n")
    assert lb.TASKS["samsum"].first_line_only and lb.TASKS["samsum"].stop_on_newline
    assert not lb.TASKS["lcc"].chat_template and lb.TASKS["hotpotqa"].chat_template
    assert lb.get_task("hotpotqa_e") is lb.TASKS["hotpotqa"]  # LongBench-E uses the same spec
    for spec in lb.TASKS.values():  # every template fills with exactly context and input
        assert "{" not in lb.build_prompt(spec, example(context="", input=""))


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown LongBench task 'hotpot'.*hotpotqa.*repobench-p"):
        lb.get_task("hotpot")


def test_build_prompt_keeps_braces_in_the_context() -> None:
    prompt = lb.build_prompt("trec", example(context="f(x) = {x}", input="What is f?"))
    assert prompt.endswith("examples of questions.\n\nf(x) = {x}\nWhat is f?")


def test_custom_task_with_its_own_metric(registries: None) -> None:
    def exact(pred: str, truth: str, all_classes=None) -> float:
        return float(pred.strip() == truth)

    spec = lb.TaskSpec("needle", "exact", 16, "{context}\nQ: {input}\nA:", "en")
    assert lb.register_task(spec, metric_fn=exact) is spec
    assert lb.get_task("needle") is spec
    assert lb.build_prompt(spec, example()) == "Alice met Bob.\nQ: Who?\nA:"
    assert m.score("needle", [" 42", "41"], [["42"], ["42"]]) == 50.0
    assert lb.score_examples("needle", ["Alice"], [example()]) == 100.0
    with pytest.raises(ValueError, match="already registered"):
        lb.register_task(lb.TaskSpec("needle", "exact", 8, "{context}", "en"))
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        lb.register_task(lb.TaskSpec("other", "bleu", 8, "{context}", "en"))


def test_taskspec_rejects_bad_templates() -> None:
    with pytest.raises(ValueError, match=r"only use \{context\} and \{input\}.*question"):
        lb.TaskSpec("t", "qa_f1", 8, "{context} {question}", "en")
    with pytest.raises(ValueError, match="max_new_tokens"):
        lb.TaskSpec("t", "qa_f1", 0, "{context}", "en")


def test_truncate_middle_keeps_both_ends() -> None:
    ids = list(range(10))
    assert lb.truncate_middle(ids, 4) == [0, 1, 8, 9]
    assert lb.truncate_middle(ids, 5) == [0, 1, 8, 9]  # odd length: 2 * (5 // 2), as LongBench
    assert lb.truncate_middle(ids, 1) == []  # not ids[-0:], the whole list
    assert lb.truncate_middle(ids, 10) is ids
    arr = np.arange(20).reshape(2, 10)  # batch of 2, cut along the last axis
    assert lb.truncate_middle(arr, 4).tolist() == [[0, 1, 8, 9], [10, 11, 18, 19]]


# --------------------------------------------------------------------------- loading

def test_load_task_reads_jsonl_and_fills_optional_fields(tmp_path: Path) -> None:
    rows = [example(_id="a"), example(answers=["Bob", "B."], _id="b"), example(_id="c")]
    write_jsonl(tmp_path / "hotpotqa.jsonl", rows[:2] + [""] + rows[2:])  # a blank line is skipped
    loaded = lb.load_task("hotpotqa", data_dir=tmp_path)
    assert [ex["_id"] for ex in loaded] == ["a", "b", "c"]
    assert loaded[1]["answers"] == ["Bob", "B."] and loaded[0]["all_classes"] is None
    assert len(lb.load_task("hotpotqa", data_dir=tmp_path, limit=2)) == 2
    # the unzipped release keeps files under data/
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "musique_e.jsonl", rows)
    assert len(lb.load_task("musique_e", data_dir=tmp_path)) == 3


def test_fixture_end_to_end() -> None:
    examples = lb.load_task("trec", data_dir=FIXTURES)
    assert "Where is the Eiffel Tower?" in lb.build_prompt("trec", examples[0])
    # ex 0: first line "Location" -> 1; ex 1: "Numeric value" and "Location" named -> 1/2. Mean 0.75
    preds = ["Location\nQuestion: junk", "Type: Numeric value or Location"]
    assert lb.score_examples("trec", preds, examples) == pytest.approx(75.0)


def test_corrupt_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qasper.jsonl", [example(), '{"input": "broken",'])
    with pytest.raises(lb.LongBenchDataError, match=r"qasper\.jsonl:2: not valid JSON"):
        lb.load_task("qasper", data_dir=tmp_path)
    write_jsonl(path, [example(), "[1, 2]"])
    with pytest.raises(lb.LongBenchDataError, match=r"qasper\.jsonl:2: expected a JSON object"):
        lb.load_task("qasper", data_dir=tmp_path)


def test_missing_and_bad_fields_are_reported(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "qasper.jsonl", [{"input": "q", "context": "c"}])
    lacks = r"qasper\.jsonl:1: .*lacks required field\(s\) \['answers'\]"
    with pytest.raises(lb.LongBenchDataError, match=lacks):
        lb.load_task("qasper", data_dir=tmp_path)
    write_jsonl(tmp_path / "qasper.jsonl", [example(answers="Alice")])
    with pytest.raises(lb.LongBenchDataError, match="non-empty list of strings"):
        lb.load_task("qasper", data_dir=tmp_path)
    write_jsonl(tmp_path / "trec.jsonl", [example()])  # classification needs all_classes
    with pytest.raises(lb.LongBenchDataError, match=r"trec\.jsonl:1: .*all_classes"):
        lb.load_task("trec", data_dir=tmp_path)


def test_empty_and_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lcc.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(lb.LongBenchDataError, match=r"lcc\.jsonl has no examples"):
        lb.load_task("lcc", data_dir=tmp_path)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # never touch the network from a test
    with pytest.raises(FileNotFoundError, match=r"'qmsum'.*qmsum\.jsonl.*data\.zip"):
        lb.load_task("qmsum", data_dir=tmp_path)
    monkeypatch.delenv(lb.DATA_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="no data_dir given"):
        lb.load_task("qmsum")
