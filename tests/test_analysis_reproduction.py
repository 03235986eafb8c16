"""The committed reproduction numbers are the committed stores' numbers."""
from pathlib import Path

import pytest

from analysis.reproduction import begin, block_name, end, main, replace_block

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reproduction.md"
# The committed stores and docs/reproduction.md's arguments for each: the pre-registered
# threshold, and 0.95 as a labelled exploratory one.
STUDIES = {str(ROOT / "results" / "study-30ep"): ["--exploratory", "0.95"],
           str(ROOT / "results" / "study"): ["--exploratory", "0.95"]}
OLD = str(ROOT / "results" / "study-30ep")


@pytest.mark.parametrize("store", STUDIES)
def test_docs_numbers_match_the_committed_store(store):
    assert main([store, *STUDIES[store], "--check", str(DOC)]) == 0


def test_a_changed_number_is_caught(tmp_path):
    doc = DOC.read_text()
    head, block = doc.split(begin(block_name(OLD)), 1)
    tampered = tmp_path / "reproduction.md"
    # change one digit inside the store's generated block only
    i = next(i for i, c in enumerate(block) if c.isdigit())
    tampered.write_text(head + begin(block_name(OLD)) + block[:i] + str((int(block[i]) + 1) % 10) + block[i + 1:])
    assert main([OLD, *STUDIES[OLD], "--check", str(tampered)]) == 1


def test_replace_block_keeps_the_prose_and_the_other_blocks():
    doc = f"intro\n{begin('a')}\nold a\n{end('a')}\nmiddle\n{begin('b')}\nold b\n{end('b')}\noutro\n"
    assert replace_block(doc, "b", f"{begin('b')}\nnew\n{end('b')}") == \
        f"intro\n{begin('a')}\nold a\n{end('a')}\nmiddle\n{begin('b')}\nnew\n{end('b')}\noutro\n"
    with pytest.raises(ValueError, match="no generated block 'c'"):
        replace_block(doc, "c", "x")


def test_block_names_are_store_folders():
    assert block_name("results/study-30ep/") == "study-30ep" and block_name("/x/results/study") == "study"
