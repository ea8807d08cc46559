"""CITATION.cff: valid CFF 1.2.0 (checked with cffconvert) that references both RetroMAE papers."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CFF = Path(__file__).resolve().parents[1] / "CITATION.cff"

PAPERS = {
    "10.48550/arXiv.2205.12035": {
        "title": "RetroMAE: Pre-Training Retrieval-oriented Language Models Via Masked Auto-Encoder",
        "authors": ["Xiao", "Liu", "Shao", "Cao"],
    },
    "10.48550/arXiv.2208.00231": {
        "title": "Masked Autoencoders As The Unified Learners For Pre-Trained Sentence Representation",
        "authors": ["Liu", "Yang"],
    },
}


@pytest.fixture(scope="module")
def cff() -> dict:
    return yaml.safe_load(CFF.read_text(encoding="utf-8"))


def test_cffconvert_python_api_validates():
    cffconvert = pytest.importorskip("cffconvert", reason="cffconvert is a test dependency (pip install cffconvert)")
    citation = cffconvert.Citation(CFF.read_text(encoding="utf-8"), src=str(CFF))
    citation.validate()  # raises on any schema violation


def test_cffconvert_cli_validates():
    executable = shutil.which("cffconvert") or str(Path(sys.executable).parent / "cffconvert")
    if not Path(executable).exists():
        pytest.skip("the cffconvert command is not installed")
    result = subprocess.run([executable, "--validate", "-i", str(CFF)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


def test_software_metadata(cff):
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software"
    assert cff["title"].startswith("retromae-hf")
    assert cff["license"] == "Apache-2.0"


def test_both_retromae_papers_are_referenced(cff):
    references = {reference["doi"]: reference for reference in cff["references"]}
    assert set(PAPERS) <= set(references)
    for doi, expected in PAPERS.items():
        reference = references[doi]
        assert reference["type"] == "article"
        assert reference["year"] == 2022
        assert reference["title"] == expected["title"]
        assert [author["family-names"] for author in reference["authors"]] == expected["authors"]
        assert reference["url"] == f"https://arxiv.org/abs/{doi.split('arXiv.')[1]}"


def test_the_emnlp_version_is_identified(cff):
    retromae = next(ref for ref in cff["references"] if ref["doi"] == "10.48550/arXiv.2205.12035")
    assert "EMNLP 2022" in retromae["conference"]["name"]
    assert any(identifier["value"] == "10.18653/v1/2022.emnlp-main.35" for identifier in retromae["identifiers"])
