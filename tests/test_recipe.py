"""Recipe values are converted to their field's type in one place; what cannot be converted is refused by name."""

import enum

import pytest

from retromae_hf.recipe import RecipeError, build_recipe, coerce, parse_override, recipe_differences


class Color(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        ("5e-5", float, 5e-5),
        (3, float, 3.0),
        ("64", int, 64),
        (64.0, int, 64),
        ("1e3", int, 1000),
        ("true", bool, True),
        ("no", bool, False),
        (7, str, "7"),
        ("0.1", float | int, 0.1),
        ("linear", Color | str, "linear"),
        ("red", Color, "red"),
        (None, int | None, None),
        ("x.txt", list[str], ["x.txt"]),
        (["1", 2], list[int], [1, 2]),
    ],
)
def test_values_become_their_fields_type(value, annotation, expected):
    result = coerce(value, annotation)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_length", "long", r"max_length must be int, got 'long'"),
        ("max_length", 64.5, r"max_length must be int, got 64\.5"),
        ("max_length", True, r"max_length must be int, got True"),
        ("packing", "maybe", r"packing must be bool"),
        ("max_length", None, r"max_length must be int, got None"),
        ("training.learning_rate", "fast", r"training\.learning_rate must be float, got 'fast'"),
        ("training.seed", "abc", r"training\.seed must be int, got 'abc'"),
        ("training.report_to", {"a": 1}, r"training\.report_to must be null or str or list"),
        ("training.learnig_rate", 1, r"did you mean training\.learning_rate"),
        ("model_config", "big", r"model_config must be dict"),
    ],
)
def test_unconvertible_values_are_refused_naming_the_key(key, value, message):
    with pytest.raises(RecipeError, match=message):
        build_recipe({"stage": 1, "corpus": ["c.txt"]}, {key: value})


def test_override_values_are_yaml_and_need_an_equals_sign():
    assert parse_override("training.learning_rate=5e-5") == (["training", "learning_rate"], "5e-5")
    assert parse_override("max_length=128") == (["max_length"], 128)
    for text in ("training.learning_rate", "=3"):
        with pytest.raises(RecipeError, match="KEY=VALUE"):
            parse_override(text)


def test_fingerprints_ignore_where_and_how_often_but_not_what():
    base = {"stage": 1, "corpus": ["c.txt"]}
    one = build_recipe(base, {"output_dir": "a", "training.logging_steps": 1}).fingerprint()
    two = build_recipe(base, {"output_dir": "b", "training.save_steps": 9}).fingerprint()
    assert recipe_differences(one, two) == []
    three = build_recipe(base, {"training.learning_rate": 3e-5, "model_config.hidden_size": 64}).fingerprint()
    assert recipe_differences(one, three) == [
        "model_config.hidden_size: (not set) -> 64",
        "training.learning_rate: (not set) -> 3e-05",
    ]


def test_a_setting_added_after_a_run_was_recorded_is_no_difference_at_its_default():
    now = build_recipe({"stage": 2, "pairs": ["p.jsonl"]}, {}).fingerprint()
    recorded_by_an_older_version = {key: value for key, value in now.items() if key != "negative_kind"}
    assert recipe_differences(recorded_by_an_older_version, now) == []
    changed = build_recipe({"stage": 2, "pairs": ["p.jsonl"]}, {"negative_kind": "both"}).fingerprint()
    assert recipe_differences(recorded_by_an_older_version, changed) == ["negative_kind: (not set) -> 'both'"]
