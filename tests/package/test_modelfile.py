import pytest

from edgekit.package.modelfile import Modelfile, ModelfileError, parse, typed_parameters

TRICKY_TEMPLATE = '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}  "quoted" \ttab\n'


def test_round_trip_keeps_every_instruction_exactly():
    mf = Modelfile(
        from_="./my model-Q4_K_M.gguf",
        template=TRICKY_TEMPLATE,
        system='  You are terse.\nSay "no" often.  ',
        parameters=[
            ("temperature", "0.6"),
            ("top_k", "20"),
            ("stop", "<|im_start|>"),
            ("stop", "<|im_end|>"),
            ("stop", " padded "),
            ("stop", 'say "x"'),
            ("stop", "two\nlines"),
        ],
        licenses=["Apache License\n  Version 2.0\n", "second license"],
        adapters=["./lora.gguf"],
        messages=[("user", "Is Toronto in Canada?"), ("assistant", "yes")],
        requires="0.14.0",
    )
    text = mf.render(header="written by a test\nsecond line")
    assert text.startswith("# written by a test\n# second line\nFROM ./my model-Q4_K_M.gguf\n")
    back = parse(text)
    assert back == mf
    assert parse(back.render()) == mf


def test_parses_the_examples_in_ollamas_documentation():
    mario = parse(
        "FROM llama3.2\n"
        "# sets the temperature to 1 [higher is more creative, lower is more coherent]\n"
        "PARAMETER temperature 1\n"
        "# sets the context window size to 4096\n"
        "PARAMETER num_ctx 4096\n\n"
        "# sets a custom system message to specify the behavior of the chat assistant\n"
        "SYSTEM You are Mario from super mario bros, acting as an assistant.\n"
    )
    assert mario.from_ == "llama3.2"
    assert mario.parameters == [("temperature", "1"), ("num_ctx", "4096")]
    assert mario.system == "You are Mario from super mario bros, acting as an assistant."
    shown = parse(
        "FROM /models/blobs/sha256-00e1\n"
        'TEMPLATE """{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n'
        '{{ .System }}<|eot_id|>{{ end }}"""\n'
        'PARAMETER stop "<|start_header_id|>"\nPARAMETER stop "<|eot_id|>"\n'
        'license """\n<license text>\n"""\n'
        "MESSAGE user Is Toronto in Canada?\nMESSAGE assistant yes\n"
    )
    assert shown.template.endswith("<|eot_id|>{{ end }}") and "\n\n{{ .System }}" in shown.template
    assert shown.parameters_json() == {"stop": ["<|start_header_id|>", "<|eot_id|>"]}
    assert shown.licenses == ["\n<license text>\n"]  # instructions are case-insensitive
    assert shown.messages == [("user", "Is Toronto in Canada?"), ("assistant", "yes")]


@pytest.mark.parametrize(
    "text, error",
    [
        ("PARAMETER temperature 1\n", "no FROM"),
        ("FROM x\nFROBNICATE y\n", "line 2: unknown instruction"),
        ('FROM x\nTEMPLATE """never closed\n', 'unterminated """'),
        ("FROM x\nMESSAGE robot hi\n", "message role"),
        ("FROM\n", "expected a space"),
    ],
)
def test_malformed_modelfiles_fail_naming_the_line(text, error):
    with pytest.raises(ModelfileError) as e:
        parse(text)
    assert error in e.value.one_line()


def test_values_a_modelfile_cannot_hold_are_refused_before_writing():
    with pytest.raises(ModelfileError, match='"""'):
        Modelfile(from_="./m.gguf", system='a """ b').render()
    with pytest.raises(ModelfileError, match="one Modelfile line"):
        Modelfile(from_="./a\nb.gguf").render()


def test_parameters_are_typed_as_ollama_stores_them():
    assert typed_parameters(
        [
            ("temperature", "0.6"),
            ("repeat_penalty", "1.0"),
            ("top_k", "20"),
            ("use_mmap", "false"),
            ("stop", "a"),
            ("stop", "b"),
        ]
    ) == {"temperature": 0.6, "repeat_penalty": 1, "top_k": 20, "use_mmap": False, "stop": ["a", "b"]}
    with pytest.raises(ModelfileError, match="unknown Ollama parameter 'temprature'"):
        typed_parameters([("temprature", "1")])
    with pytest.raises(ModelfileError, match="is not a whole number"):
        typed_parameters([("top_k", "0.5")])


@pytest.mark.parametrize(
    "name, raw, why",
    [
        # JSON (Ollama's params blob) holds no NaN or infinity; Go's ParseFloat(32) overflows
        ("temperature", "inf", "not a finite number"),
        ("temperature", "-Infinity", "not a finite number"),
        ("top_p", "nan", "not a finite number"),
        ("temperature", "1e39", "out of range for Ollama"),
        ("temperature", "1e400", "out of range for Ollama"),
        # spellings Python reads and Go's strconv does not
        ("top_k", "1_000", "not a whole number"),
        ("top_k", " 5", "not a whole number"),
        ("top_k", "\u0661\u0662", "not a whole number"),
        ("seed", str(2**63), "not a whole number"),
        ("temperature", "0.5 ", "not a finite number"),
        ("temperature", "", "not a finite number"),
        ("use_mmap", "TrUe", "not true or false"),
        ("use_mmap", "yes", "not true or false"),
    ],
)
def test_values_ollama_would_refuse_are_refused(name, raw, why):
    with pytest.raises(ModelfileError, match=why) as e:
        typed_parameters([(name, raw)])
    assert e.value.one_line().startswith(f"parameter {name}: ")


def test_the_values_go_reads_are_kept():
    got = typed_parameters(
        [
            ("seed", str(-(2**63))),
            ("top_k", "+5"),
            ("temperature", ".5"),
            ("top_p", "1e-3"),
            ("use_mmap", "T"),
        ]
    )
    assert got == {"seed": -(2**63), "top_k": 5, "temperature": 0.5, "top_p": 0.001, "use_mmap": True}
    assert typed_parameters([("temperature", "3.4e38")]) == {"temperature": 3.4e38}
