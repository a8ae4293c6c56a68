"""`edgekit sweep`: the sweep file is checked whole before any work (no model, no Ray needed)."""

import json
import socket

import pytest

from edgekit.bench.sweep import bar_dir, load_sweep
from edgekit.cli.main import main

GOOD = """
models = ["smollm2-135m"]
targets = ["cpu", "box.toml"]
bars = ["kld<=0.01", "kld<=0.1"]
formats = ["gguf:Q4_K_M", "gguf:Q8_0"]
imatrix = "none"
speed = "none"
evaluation = "eval.txt"
"""

BOX = """
name = "box"
kind = "cpu"
memory_gib = 4
bandwidth_gbs = 20
"""


@pytest.fixture
def sweep_dir(tmp_path):
    (tmp_path / "box.toml").write_text(BOX)
    (tmp_path / "eval.txt").write_text("some held-out text\n")
    return tmp_path


def _run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return e.value.code, err


def _one_line(capsys, path, needle, *extra):
    out = path.parent / "out"
    code, err = _run(capsys, "sweep", str(path), "--out", str(out), *extra)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()  # nothing written
    return err[0]


def test_a_good_file_is_read_whole(sweep_dir):
    (sweep_dir / "s.toml").write_text(GOOD)
    spec = load_sweep(sweep_dir / "s.toml")
    assert spec.models == ("smollm2-135m",) and [t.name for t in spec.targets] == ["cpu", "box"]
    assert spec.targets[1].toml and "box" in spec.target_tomls()
    assert spec.evaluation == str(sweep_dir / "eval.txt")
    jobs = spec.jobs(sweep_dir / "out")
    assert [(j.model, j.target) for j in jobs] == [("smollm2-135m", "cpu"), ("smollm2-135m", "box")]
    assert json.loads(json.dumps(spec.to_dict()))["bars"] == ["kld<=0.01", "kld<=0.1"]


def test_the_main_job_options_are_one_declaration(sweep_dir):
    """A sweep file's options are the main job's JobOptions (auto rungs included), passed to
    every job as they are."""
    from edgekit.bench.mainjob import JobOptions

    (sweep_dir / "s.toml").write_text(GOOD + "auto = false\n")
    spec = load_sweep(sweep_dir / "s.toml")
    assert isinstance(spec.options, JobOptions) and spec.options.auto is False
    assert spec.options.formats == ("gguf:Q4_K_M", "gguf:Q8_0") and spec.imatrix == "none"
    assert all(j.options is spec.options for j in spec.jobs(sweep_dir / "out"))
    kw = spec.options.kwargs()
    assert kw["auto"] is False and kw["formats"] == ["gguf:Q4_K_M", "gguf:Q8_0"]
    assert spec.to_dict()["auto"] is False
    (sweep_dir / "s.toml").write_text(GOOD)
    assert load_sweep(sweep_dir / "s.toml").options.auto is True  # on unless the file says so
    (sweep_dir / "s.toml").write_text(GOOD + 'auto = "no"\n')
    with pytest.raises(Exception, match="auto"):
        load_sweep(sweep_dir / "s.toml")


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda s: s.replace('"smollm2-135m"]', '"smollm2-135m"'), "not valid TOML"),
        (
            lambda s: s.replace('"smollm2-135m"', '"smollm2-135m", "qwen9-1b"'),
            "models[1]': unknown model 'qwen9-1b'",
        ),
        (lambda s: s.replace('"cpu", ', '"cpu", "h900", '), "targets[1]': unknown target 'h900'"),
        (lambda s: s.replace('"box.toml"', '"nope.toml"'), "targets[1]': nope.toml: no such target file"),
        (lambda s: s.replace('"kld<=0.1"', '"kld>=0.1"'), "bars[1]'"),
        (lambda s: s.replace('"kld<=0.1"', '"kld <= 0.01"'), "the same bar as bars[0]"),
        (lambda s: s.replace("Q8_0", "Q9_9"), "formats[1]': unknown format 'gguf:Q9_9'"),
        (lambda s: s + 'colour = "red"\n', "key 'colour': unknown key"),
        (lambda s: s.replace('"eval.txt"', '"missing.txt"'), "key 'evaluation': missing.txt: no such file"),
        (lambda s: s.replace('speed = "none"', 'speed = "fast"'), "key 'speed'"),
        (lambda s: s + "[ray]\nnum_cpus = 0\n", "ray.num_cpus"),
        (lambda s: s.replace('models = ["smollm2-135m"]', "models = []"), "key 'models'"),
    ],
)
def test_bad_entries_are_one_line_naming_them(sweep_dir, capsys, edit, needle):
    (sweep_dir / "s.toml").write_text(edit(GOOD))
    _one_line(capsys, sweep_dir / "s.toml", needle)


def test_a_malformed_user_target_names_its_file_and_key(sweep_dir, capsys):
    (sweep_dir / "box.toml").write_text(BOX.replace("memory_gib = 4", "memory_gib = -4"))
    (sweep_dir / "s.toml").write_text(GOOD)
    line = _one_line(capsys, sweep_dir / "s.toml", "targets[1]'")
    assert "memory_gib" in line and "box.toml" in line


def test_an_unreachable_ray_address_is_one_line_before_any_work(sweep_dir, capsys):
    pytest.importorskip("ray")
    (sweep_dir / "s.toml").write_text(GOOD)
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _one_line(
        capsys,
        sweep_dir / "s.toml",
        f"--ray 127.0.0.1:{port}: no Ray cluster answers",
        "--ray",
        f"127.0.0.1:{port}",
    )
    _one_line(capsys, sweep_dir / "s.toml", "expected HOST:PORT", "--ray", "nowhere")


def test_bar_directories():
    assert bar_dir("kld<=0.03") == "kld-le-0.03"
    assert bar_dir("ppl<=+3%") == "ppl-le-3pct"
    assert bar_dir("same_top>=0.9") == "same-top-ge-0.9"
