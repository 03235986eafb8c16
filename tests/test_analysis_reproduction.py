"""The committed reproduction numbers are the committed store's numbers."""
from pathlib import Path

import pytest

from analysis.reproduction import BEGIN, END, main, replace_block

ROOT = Path(__file__).resolve().parents[1]
STUDY = str(ROOT / "results" / "study-30ep")  # committed
# docs/reproduction.md: the pre-registered threshold, and 0.95 as a labelled exploratory one
ARGS = ["--exploratory", "0.95"]


def test_docs_numbers_match_the_committed_store():
    assert main([STUDY, *ARGS, "--check", str(ROOT / "docs" / "reproduction.md")]) == 0


def test_a_changed_number_is_caught(tmp_path):
    doc = (ROOT / "docs" / "reproduction.md").read_text()
    head, block = doc.split(BEGIN, 1)
    tampered = tmp_path / "reproduction.md"
    # change one digit inside the generated block only
    i = next(i for i, c in enumerate(block) if c.isdigit())
    tampered.write_text(head + BEGIN + block[:i] + str((int(block[i]) + 1) % 10) + block[i + 1:])
    assert main([STUDY, *ARGS, "--check", str(tampered)]) == 1


def test_replace_block_keeps_the_prose():
    doc = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    assert replace_block(doc, f"{BEGIN}\nnew\n{END}") == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"
    with pytest.raises(ValueError, match="no generated block"):
        replace_block("no markers", "x")
