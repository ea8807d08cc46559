"""Every `retromae-hf` command line shown in the README and in the `--help` texts runs, with tiny settings.

The lines are read from the documents themselves, so a new example is tested as soon as it is written. Each is
run as shown, in a sandbox folder that holds the local files it names (`corpus.txt`, `triplets.csv`, ...), with
only what a test machine cannot do replaced:

- training is cut to two steps of a tiny model (`--max-steps 2`, batch size 2, no bf16), and evaluation after
  training runs once, for the quickstart;
- Hub models and Hub data sets, which an offline test cannot download, are replaced by a tokenizer trained in the
  session, a tiny model from scratch, and small local files with the recipe's column names;
- before a `--resume` line, the run it continues is interrupted: its last checkpoint and `final/` are removed.

A line whose README comment says it needs the network may instead end with the one-paragraph Hub message.
"""

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, project_lines, run_cli

from retromae_hf.cli import build_parser
from retromae_hf.recipe import PYTHON_DOCSTRINGS, read_recipe_file, recipe_stages

TINY_MODEL = (
    "model_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, "
    "max_position_embeddings: 64}"
)
TINY_TRAINING = [
    "--max-steps", "2",
    "--set", "training.save_steps=1",
    "--set", "training.logging_steps=1",
    "--set", "training.per_device_train_batch_size=2",
    "--set", "training.dataloader_num_workers=0",
    "--set", "training.bf16=false",
]  # fmt: skip


def readme_commands() -> list[tuple[list[str], bool]]:
    """`(argv after "retromae-hf", needs_network)` for every command line in the README's shell blocks."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            comment = line.split(" #", 1)[1] if " #" in line else ""
            for segment in line.split(" #", 1)[0].split("&&"):
                words = shlex.split(segment)
                if words[:1] == ["retromae-hf"]:
                    commands.append((words[1:], "network" in comment))
                elif "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["retromae_hf"]:
                    commands.append((words[words.index("-m") + 2 :], "network" in comment))
    return commands


def readme_snippets(document: str = "README.md") -> list[tuple[str, str]]:
    """`(code, needs)` for every Python block of the README (or another `document`); `needs` is what its first-line
    `# needs: ...` comment names (empty for a block that runs as written, offline, in the sandbox after the
    README's commands)."""
    text = (REPO / document).read_text(encoding="utf-8")
    snippets = []
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        first = block.splitlines()[0] if block.strip() else ""
        needs = first.split("needs:", 1)[1].strip() if first.startswith("# needs:") else ""
        snippets.append((block, needs))
    return snippets


def undefined_names(code: str, defined: set[str]) -> set[str]:
    """Names a snippet reads that it neither imports nor assigns (nor `defined`, nor builtins)."""
    import ast
    import builtins

    tree = ast.parse(code)
    assigned = set(defined) | set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            assigned |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            assigned.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            assigned.add(node.name)
        elif isinstance(node, ast.arg):
            assigned.add(node.arg)
    read = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    return read - assigned


def test_readme_snippets_define_every_name_or_say_what_they_need():
    """A snippet either runs as written (offline, on the sandbox's files: `test_readme_commands_run` runs it) or
    says on its first line what it needs in a word or two (`# needs: network`); none uses names it never defines,
    except those of the snippet it says it continues."""
    previous: set[str] = set()
    snippets = readme_snippets()
    assert len(snippets) >= 5 and any(not needs for _, needs in snippets)
    for code, needs in snippets:
        inherited = previous if "continues the snippet above" in needs else set()
        assert not undefined_names(code, inherited), (code[:200], undefined_names(code, inherited))
        assert len(needs.split("(")[0].split()) <= 2, f"say in a word what it needs: {needs!r}"
        import ast

        previous = {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)} | {
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }


@pytest.mark.parametrize("document", ["docs/encoders.md"])
def test_doc_snippets_run_or_say_what_they_need(document, tmp_path, monkeypatch):
    """The Python blocks of the docs: each defines every name it uses, and each that needs nothing runs as written
    (offline, in an empty folder)."""
    snippets = readme_snippets(document)
    assert snippets
    monkeypatch.chdir(tmp_path)
    for code, needs in snippets:
        assert not undefined_names(code, set()), (code[:200], undefined_names(code, set()))
        if not needs:
            exec(compile(code, f"{document} snippet", "exec"), {"__name__": "doc_snippet"})


def help_commands() -> list[list[str]]:
    """The example lines of `retromae-hf --help` and of every command's `--help`."""
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # argparse keeps them only here
    texts = [parser.format_help(), *(sub.format_help() for sub in subcommands.values())]
    return [shlex.split(line)[1:] for text in texts for line in text.splitlines() if line.startswith("  retromae-hf ")]


def test_the_documents_show_commands():
    readme = [argv[0] for argv, _ in readme_commands()]
    assert {"train", "export", "evaluate", "convert"} <= set(readme) and len(readme) >= 10
    assert {argv[0] for argv in help_commands()} >= {"train", "demo"}
    assert ["train", "--recipe", "stage2-nli", "--set", "training.learning_rate=3e-5"] in [
        a for a, _ in readme_commands()
    ]


# --------------------------------------------------------------------------------------------------- the sandbox
def write_pairs(path: Path, columns: list[str], lines: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i in range(24):
            writer.writerow([lines[(i + k * 7) % len(lines)] for k in range(len(columns))])


def write_beir(folder: Path, lines: list[str], split: str) -> None:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as corpus, (folder / "queries.jsonl").open("w") as queries:
        for i in range(12):
            corpus.write(json.dumps({"_id": f"d{i}", "title": "", "text": lines[2 * i + 1]}) + "\n")
            queries.write(json.dumps({"_id": f"q{i}", "text": lines[2 * i]}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(12)]
    (folder / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n")


def make_sandbox(folder: Path, tokenizer) -> Path:
    """The local files the documented lines name, small and real."""
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForMaskedLM

    folder.mkdir()
    lines = project_lines(80)
    tokenizer.save_pretrained(folder / "tok")
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n")
    write_pairs(folder / "triplets.csv", ["sent0", "sent1", "hard_neg"], lines)
    write_beir(folder / "beir" / "scifact", lines, "train")
    write_beir(folder / "data" / "beir" / "scifact", lines, "test")
    (folder / "data" / "sts").mkdir(parents=True)
    sts = ["sentence1\tsentence2\tscore"] + [f"{lines[i]}\t{lines[i + 1]}\t{i % 5}" for i in range(20)]
    (folder / "data" / "sts" / "sts-test.tsv").write_text("\n".join(sts) + "\n")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)  # fmt: skip
    torch.manual_seed(0)
    state = BertForMaskedLM(config).state_dict()
    state.pop("cls.predictions.decoder.weight")  # tied to the word embeddings
    save_file(
        {key: value.contiguous().clone() for key, value in state.items()},
        str(folder / "official_state_dict.safetensors"),
    )
    config.save_pretrained(folder)  # config.json, as --bert-config names it
    # A local folder wins over the Hub name: a tiny BERT masked-LM with the session's tokenizer.
    BertForMaskedLM(config).save_pretrained(folder / "bert-base-uncased")
    tokenizer.save_pretrained(folder / "bert-base-uncased")
    return folder


def is_local_or_special(source) -> bool:
    path = source.get("path") if isinstance(source, dict) else source
    return path in (PYTHON_DOCSTRINGS, "scratch", "previous") or Path(str(path)).exists()


def train_stage_spec(args) -> tuple[dict, int]:
    raw, source = read_recipe_file(args.recipe) if args.recipe else ({"stage": args.stage or 1}, Path("cli"))
    stages = recipe_stages(raw, source)
    selected = [spec for spec in stages if args.stage is None or int(spec.get("stage", 1)) == args.stage]
    return selected[0], len(stages)


def tiny_train_argv(argv: list[str], sandbox: Path, evaluate: bool) -> list[str]:
    """The line's own arguments, then what replaces the Hub and cuts the run to two tiny steps."""
    args = build_parser().parse_args(argv)
    spec, _ = train_stage_spec(args)
    extra = list(TINY_TRAINING)
    model = args.recipe_model or spec.get("model", "bert-base-uncased")
    if not is_local_or_special(model):
        extra += ["--model", "scratch", "--tokenizer", "tok", "--set", TINY_MODEL]
    elif model == "scratch" and "model_config" not in " ".join(argv):
        for key, value in (("hidden_size", 32), ("intermediate_size", 64), ("num_hidden_layers", 1)):
            extra += ["--set", f"model_config.{key}={value}"]
        extra += ["--set", "model_config.num_attention_heads=2"]
    stage = int(spec.get("stage", args.stage or 1))
    if "--max-length" not in argv:
        # Every tiny model here has 64 positions: a recipe's lengths, set for a real model, would be refused.
        extra += ["--max-length", "64"] + (["--query-max-length", "32", "--passage-max-length", "64"] if stage == 2 else [])
    hub_corpus = not all(is_local_or_special(source) for source in spec.get("corpus", []))
    if stage == 1 and not args.recipe_corpus and hub_corpus:
        extra += ["--corpus", "corpus.txt"]
    hub_pairs = not all(is_local_or_special(source) for source in spec.get("pairs", []))
    if stage == 2 and not args.recipe_pairs and hub_pairs:
        columns = [spec.get("query_column", "query"), spec.get("positive_column", "positive")]
        columns += spec.get("negative_columns", [])
        name = f"pairs-{'-'.join(columns)}.csv"
        write_pairs(sandbox / name, columns, project_lines(80))
        extra += ["--pairs", name]
    if not evaluate:
        extra.append("--no-evaluate")
    return argv + extra


def run_folder(argv: list[str]) -> Path:
    args = build_parser().parse_args(argv)
    spec, count = train_stage_spec(args)
    if args.recipe_output_dir and count > 1:
        return Path(args.recipe_output_dir) / f"stage{spec.get('stage', 1)}"
    return Path(args.recipe_output_dir or spec["output_dir"])


def interrupt(folder: Path) -> None:
    """What a run killed after its first checkpoint leaves: no final/, no later checkpoint."""
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda path: int(path.name.rsplit("-", 1)[1]))
    assert len(checkpoints) >= 2, f"{folder} has too few checkpoints to interrupt: {checkpoints}"
    for path in [*checkpoints[1:], folder / "final"]:
        shutil.rmtree(path)


def run_documented(argv: list[str], needs_network: bool, sandbox: Path, capfd, evaluate: bool = False) -> None:
    command = argv
    if argv[0] == "train":
        command = tiny_train_argv(argv, sandbox, evaluate)
        if "--resume" in argv:
            interrupt(sandbox / run_folder(command))
    code, err = run_cli(command, capfd)
    assert "Traceback" not in err, err[-3000:]
    if needs_network and code == 2:
        assert "Hugging Face Hub" in err, err[-2000:]
    else:
        assert code == 0, f"retromae-hf {shlex.join(command)}\n{err[-3000:]}"


def test_readme_commands_run(tmp_path, monkeypatch, capfd, wordpiece_tokenizer):
    sandbox = make_sandbox(tmp_path / "readme", wordpiece_tokenizer)
    monkeypatch.chdir(sandbox)
    for argv, needs_network in readme_commands():
        # The quickstart's evaluation after training runs here once; elsewhere --no-evaluate saves the time.
        run_documented(argv, needs_network, sandbox, capfd, evaluate=argv == ["train", "--recipe", "quickstart"])
    # The chain really ran: exports load as plain sentence-transformers, the local evaluation wrote its summary.
    assert json.loads((sandbox / "exports" / "retromae-nli" / "config.json").read_text())["model_type"] == "bert"
    assert json.loads((sandbox / "evaluation" / "summary.json").read_text())["results"]
    assert (sandbox / "runs" / "quickstart" / "stage2" / "evaluation" / "summary.json").is_file()
    assert (sandbox / "converted" / "model.safetensors").is_file()
    # The README's Python snippets that need nothing but what the commands above made run as written.
    offline = [code for code, needs in readme_snippets() if not needs]
    assert offline
    for code in offline:
        exec(compile(code, "README.md snippet", "exec"), {"__name__": "readme_snippet"})
    log = (sandbox / "runs" / "stage1-wikipedia-bookcorpus" / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(line).get("step") for line in log if "loss" in json.loads(line)] == [1, 2]  # resumed at 2


def test_help_examples_run(tmp_path, monkeypatch, capfd, wordpiece_tokenizer):
    sandbox = make_sandbox(tmp_path / "help", wordpiece_tokenizer)
    monkeypatch.chdir(sandbox)
    commands = help_commands()
    assert commands
    for argv in commands:
        run_documented(argv, False, sandbox, capfd)


@pytest.mark.parametrize(
    "command", [None, "convert", "demo", "train", "export", "evaluate", "make-long-eval", "mine", "push", "pull"]
)
def test_help_answers_without_importing_the_heavy_libraries(command):
    """`--help` builds the parser only: torch, transformers, datasets, mteb stay unimported (fast help)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from retromae_hf.cli import build_parser\n"
        "parser = build_parser()\n"
        f"text = parser.format_help() if {command!r} is None else "
        f"parser._subparsers._group_actions[0].choices[{command!r}].format_help()\n"
        "heavy = {'torch', 'transformers', 'datasets', 'mteb', 'sentence_transformers', 'huggingface_hub'}\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
