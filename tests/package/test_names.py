import pytest

from edgekit.errors import EdgekitError
from edgekit.package.ollama_store import ModelName, Store


@pytest.mark.parametrize(
    "text, parts, short",
    [
        ("smollm2", ("registry.ollama.ai", "library", "smollm2", "latest"), "smollm2:latest"),
        ("smollm2:q8", ("registry.ollama.ai", "library", "smollm2", "q8"), "smollm2:q8"),
        ("qwen3-8b:Q4_K_M", ("registry.ollama.ai", "library", "qwen3-8b", "Q4_K_M"), "qwen3-8b:Q4_K_M"),
        ("me/qwen3:8b.q4", ("registry.ollama.ai", "me", "qwen3", "8b.q4"), "me/qwen3:8b.q4"),
        (
            "example.com:5000/team/m_1:v2",
            ("example.com:5000", "team", "m_1", "v2"),
            "example.com:5000/team/m_1:v2",
        ),
    ],
)
def test_valid_names_map_to_ollamas_manifest_path(tmp_path, text, parts, short):
    name = ModelName.parse(text)
    assert name.parts() == parts and name.short == short
    assert Store(tmp_path).manifest_path(name) == tmp_path.joinpath("manifests", *parts)


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("../x", "namespace '..'"),
        ("x/../y", "'..'"),
        ("a/b/c/d", "at most"),
        ("x:y:z", "holds ':'"),
        ("/abs", "empty part"),
        ("m:", "empty tag"),
        (".hidden", "must start"),
        ("-dash", "must start"),
        ("has space", "holds ' '"),
        ("ns.dot/model", "namespace 'ns.dot' holds '.'"),
        ("a\\b", "backslash"),
        ("http://host/ns/m", "URL scheme"),
        ("m" * 81, "81 characters"),
        ("m:" + "t" * 81, "tag is 81"),
        ("caf\u00e9", "holds"),
    ],
)
def test_names_ollama_rejects_are_refused_in_one_line(text, why):
    with pytest.raises(EdgekitError) as e:
        ModelName.parse(text)
    line = e.value.one_line()
    assert why in line and "\n" not in line


def test_an_existing_model_keeps_its_spelling(tmp_path):
    # Ollama matches names case-insensitively; a second spelling must not make a second model
    (tmp_path / "manifests/registry.ollama.ai/library/SmolLM2").mkdir(parents=True)
    (tmp_path / "manifests/registry.ollama.ai/library/SmolLM2/Q8").write_text("{}")
    assert Store(tmp_path).existing_name(ModelName.parse("smollm2:q8")).short == "SmolLM2:Q8"
    assert Store(tmp_path).existing_name(ModelName.parse("other:q8")).short == "other:q8"
