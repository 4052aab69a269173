"""Reliability under attack (issue 18), hostile or careless overlays: each is refused (or warned
about) with a located message, in bounded time and memory. Items 7-13 and 18."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import attncap
from attncap import lint
from attncap.loader import LoadError, check_paths, load_registry, packaged_dir
from attncap.yamlsource import YamlError, read_document
from test_hardening import _within as within  # a hang guard: fails the test if fn does not return in time

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = packaged_dir()
TOY = "backend: toy\npackage: toy\ninstall: pip install 'toy{specifier}'\n"


def mine(problems, directory: Path) -> list:
    return [p for p in problems if p.file.startswith(str(directory))]


# ---- 7. lint checks are O(1) in the numbers they read -------------------------------------------

def test_a_huge_multiple_of_does_not_hang_loading(tmp_path):
    (tmp_path / "toy.yaml").write_text(TOY + "support:\n  - id: r\n    head_dim_qk: {min: 1, max: 1000000000000, "
                                             "multiple_of: 1000000000000}\n    source: test\n", encoding="utf-8")
    registry = within(30, lambda: load_registry((tmp_path,), use_env=False))
    assert "toy" in registry.backends


@pytest.mark.parametrize("low, high, step, empty", [(1, 10**12, 10**12, False), (5, 9, 10, True), (10, 10, 10, False),
                                                     (-7, -5, 4, True), (-8, -5, 4, False), (11, 19, 10, True)])
def test_empty_range_arithmetic(low, high, step, empty):
    from attncap.models import IntRange
    assert (lint._empty_range(IntRange(min=low, max=high, multiple_of=step)) is not None) is empty
    brute = not any(v % step == 0 for v in range(low, high + 1)) if high - low < 10**6 else False
    assert brute is empty


# ---- 8. the value limit holds while composing ----------------------------------------------------

SCALARS_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from attncap.yamlsource import MAX_FILE_BYTES, YamlError, read_document
    n = MAX_FILE_BYTES
    cases = {
        "flow": "x: [" + ",".join(["a"] * ((n - 10) // 2)) + "]\\n",
        "block": "x:\\n" + "- a\\n" * ((n - 10) // 4),
        "flow-map-keys": "x: {" + ",".join(f"{i}" for i in range(300_000)) + "}\\n",
        "40-deep-prefix": "x: " + "[" * 40 + ",".join(["a"] * ((n - 200) // 2)) + "]" * 40 + "\\n",
    }
    path = Path(sys.argv[1])
    for name, text in cases.items():
        assert len(text.encode()) <= MAX_FILE_BYTES, name
        path.write_text(text, encoding="utf-8")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            read_document(path)
            problem = None
        except YamlError as exc:
            problem = str(exc)
        print(json.dumps({"case": name, "seconds": time.perf_counter() - start, "problem": problem,
                          "rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}), flush=True)
""")


def test_a_file_of_a_million_scalars_is_refused_in_bounded_memory(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCALARS_SCRIPT, str(tmp_path / "toy.yaml")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert row["problem"] and "more than 200000 values" in row["problem"], row
        assert row["problem"].startswith(str(tmp_path / "toy.yaml") + ":"), row
        assert row["rss_mb"] < 100, row  # composing all of it cost 300-700 MB
    print(rows)


def test_within_the_limits_a_large_file_still_loads(tmp_path):
    text = "x:\n" + "".join(f"  - {i}\n" for i in range(150_000))  # > the short-text fast path
    (tmp_path / "big.yaml").write_text(text, encoding="utf-8")
    doc = read_document(tmp_path / "big.yaml")
    assert doc.value["x"][-1] == 149_999 and doc.position(("x", 149_999)) == (150_001, 5)


# ---- 9. validate is not quadratic ---------------------------------------------------------------

ARCHS = ["sm80", "sm86", "sm89", "sm90", "sm100", "sm103", "sm110", "sm120"]
DTYPES = ["fp16", "bf16", "fp32"]


def many_rules(n: int, shape: str = "spread") -> str:
    """n support rules for flash-attn-4: spread over archs, dtypes and head-dim pairs, or all on one arch
    and dtype, told apart by overlapping head-dim ranges (nothing to index on)."""
    lines = ["backend: flash-attn-4", "support:"]
    for i in range(n):
        if shape == "spread":
            qk = 8 * (1 + i // (len(ARCHS) * len(DTYPES)))
            cond = f"arch: [{ARCHS[i % len(ARCHS)]}], dtype: [{DTYPES[i // len(ARCHS) % len(DTYPES)]}], " \
                   f"head_dims: [[{qk}, {qk}]]"
        else:
            cond = f"arch: [sm90], dtype: [bf16], head_dim_qk: {{min: {i + 1}, max: {i + 9}}}"
        lines.append(f"  - {{id: r{i}, {cond}, versions: '>=4.0.0b5', source: generated}}")
    return "\n".join(lines) + "\n"


def test_validate_10000_rules(tmp_path):
    text = many_rules(10_000)
    # Two shadowed rules the index must still find: a copy of r5, and a rule inside r0's arch/dtype/pair.
    text += "  - {id: copy-of-r5, arch: [sm103], dtype: [fp16], head_dims: [[8, 8]], versions: '>=4.0.0b5', " \
            "source: generated}\n"
    (tmp_path / "flash_attn_4.yaml").write_text(text, encoding="utf-8")
    registry, problems = within(300, lambda: check_paths([PACKAGED, tmp_path]))
    assert registry is not None and len(registry.backends["flash-attn-4"].support) > 10_000
    shadowed = [p.message for p in mine(problems, tmp_path) if p.check == "shadowed-rule"]
    assert shadowed == ["rule 'copy-of-r5' is entirely covered by rule 'r5': it can never decide anything"]


def test_validate_beyond_the_comparison_bound_says_what_it_did_not_check(tmp_path):
    (tmp_path / "flash_attn_4.yaml").write_text(many_rules(2_000, "same"), encoding="utf-8")
    registry, problems = within(300, lambda: check_paths([PACKAGED, tmp_path]))
    [bound] = [p for p in mine(problems, tmp_path) if p.check == "shadowed-rule"]
    assert bound.severity == "warning" and "not checked from rule" in bound.message
    limit = lint.SHADOW_COMPARISONS + lint.SHADOW_COMPARISONS_PER_RULE * len(registry_rules(tmp_path))
    assert f"more than {limit} candidate pairs" in bound.message


def registry_rules(overlay: Path) -> list:
    return load_registry((overlay,), use_env=False).backends["flash-attn-4"].support


def _brute_force_shadowed(registry) -> list[str]:
    vocab, out = registry.vocabulary, []
    for backend in registry.backends.values():
        for i, a in enumerate(backend.support):
            other = next((b for j, b in enumerate(backend.support) if j != i and lint.covers(b, a, vocab)
                          and not (lint.covers(a, b, vocab) and j > i)), None)
            if other is not None:
                out.append(f"rule {a.id!r} is entirely covered by rule {other.id!r}: it can never decide anything")
    return out


@pytest.mark.parametrize("extra", [
    "",
    "  - {id: wide, source: t}\n  - {id: narrow, arch: [sm90], dtype: [bf16], head_dims: [[64, 64]], source: t}\n",
    "  - {id: a, arch: [sm90], dtype: [bf16, fp16], source: t}\n  - {id: b, arch: {family: hopper}, dtype: [bf16], "
    "passes: [forward], source: t}\n  - {id: c, arch: [sm90], dtype: [bf16, fp16], source: t}\n",
    "  - {id: p, head_dims: [[64, 64], [128, 128]], source: t}\n  - {id: q, head_dims: [[64, 64]], dtype: [bf16], "
    "source: t}\n  - {id: r, head_dim_qk: {min: 1, max: 512}, head_dim_v: {max: 512}, source: t}\n",
])
def test_the_index_finds_what_comparing_every_pair_finds(tmp_path, extra):
    (tmp_path / "toy.yaml").write_text(TOY + "support:\n" + (extra or "  - {id: only, source: t}\n"),
                                       encoding="utf-8")
    registry, problems = check_paths([PACKAGED, tmp_path])
    assert registry is not None
    assert sorted(p.message for p in problems if p.check == "shadowed-rule") == sorted(_brute_force_shadowed(registry))


# ---- 10. explicit tags and huge integers --------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("!!int abc", "tag 'tag:yaml.org,2002:int' is not allowed"),
    ("!!float x", "tag 'tag:yaml.org,2002:float' is not allowed"),
    ("!!bool yes", "tag 'tag:yaml.org,2002:bool' is not allowed"),  # was silently false
    ("!!null x", "tag 'tag:yaml.org,2002:null' is not allowed"),  # was silently None
    ("!!int '12'", "tag 'tag:yaml.org,2002:int' is not allowed"),
    ("1" * 5000, "an integer of 5000 digits is too large"),
])
def test_explicit_tags_and_huge_integers_are_located(tmp_path, value, message):
    (tmp_path / "toy.yaml").write_text(TOY + f"description: {value}\nsupport: [{{id: r, source: t}}]\n",
                                       encoding="utf-8")
    (tmp_path / "torch_sdpa_math.yaml").write_text("backend: torch-sdpa-math\nnote: [\n", encoding="utf-8")
    registry, problems = check_paths([PACKAGED, tmp_path])
    assert registry is None
    [tagged] = [p for p in problems if p.file.endswith("toy.yaml")]
    assert (tagged.line, tagged.field) == (4, "description") and message in tagged.message
    assert any(p.file.endswith("torch_sdpa_math.yaml") for p in problems)  # the other file's problem is kept
    with pytest.raises(LoadError, match="toy.yaml:4:"):  # the loader's error type, not a bare ValueError
        load_registry((tmp_path,), use_env=False)


def test_the_str_tag_and_plain_values_still_read(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: !!str 12\nb: 12\nc: !!int 12\nd: !!str yes\n", encoding="utf-8")
    assert read_document(path).value == {"a": "12", "b": 12, "c": 12, "d": "yes"}


# ---- 11. each file is read once (no TOCTOU between parsing and linting) --------------------------

@pytest.mark.parametrize("swap", ["fifo", "not-utf8", "deleted"])
def test_a_file_swapped_after_parsing_changes_nothing(tmp_path, monkeypatch, swap):
    from attncap import loader
    path = tmp_path / "toy.yaml"
    path.write_text(TOY + "support: [{id: r, source: t}]\n", encoding="utf-8")
    real = loader._parse

    def parse_then_swap(p, problems):
        out = real(p, problems)
        if p == path:
            path.unlink()
            if swap == "fifo":
                os.mkfifo(path)
            elif swap == "not-utf8":
                path.write_bytes(b"\xff\xfe# changed\n")
        return out
    monkeypatch.setattr(loader, "_parse", parse_then_swap)
    registry, problems = within(30, lambda: check_paths([PACKAGED, tmp_path]))
    assert registry is not None and "toy" in registry.backends
    shown = [p.check for p in mine(problems, tmp_path) if p.check != "checked-spans"]  # toy states no span: a warning
    assert shown == ["schema-line"]  # what the parsed text said


# ---- 12. overlays that changed answers without a word -------------------------------------------

def test_two_files_for_one_backend_in_a_directory(tmp_path):
    for name in ("flash_attn_4.yaml", "flash-attn-4.yaml"):
        (tmp_path / name).write_text("backend: flash-attn-4\n", encoding="utf-8")
    registry, problems = check_paths([PACKAGED, tmp_path])
    [problem] = [p for p in mine(problems, tmp_path) if p.check == "overlay"]
    assert registry is None and problem.line == 1 and "is also defined in" in problem.message


def test_a_known_issue_with_empty_versions(tmp_path):
    (tmp_path / "toy.yaml").write_text(TOY + "support: [{id: r, source: t}]\n"
                                             "known_issues: [{id: k, versions: '', reason: r, source: s}]\n",
                                       encoding="utf-8")
    registry, problems = check_paths([PACKAGED, tmp_path])
    assert registry is None
    assert any("known issue 'k' needs the versions it affects" in p.message for p in mine(problems, tmp_path))


def test_yml_files_are_an_error_and_dotfiles_are_skipped_with_a_warning(tmp_path):
    (tmp_path / "toy.yml").write_text(TOY + "support: [{id: r, source: t}]\n", encoding="utf-8")
    (tmp_path / ".flash_attn_4.yaml").write_text("backend: flash-attn-4\nsupport: [{id: sm90, remove: true}]\n",
                                                 encoding="utf-8")
    registry, problems = check_paths([PACKAGED, tmp_path])
    found = {Path(p.file).name: p for p in mine(problems, tmp_path)}
    assert registry is None and found["toy.yml"].severity == "error" and "not loaded" in found["toy.yml"].message
    assert found[".flash_attn_4.yaml"].severity == "warning"
    (tmp_path / "toy.yml").unlink()
    registry, _ = check_paths([PACKAGED, tmp_path])
    assert any(r.id == "sm90" for r in registry.backends["flash-attn-4"].support)  # the dotfile was not loaded


# Alias collisions and duplicate policy entries: tests/test_lint.py (vocabulary-collision, duplicate-entry).


# ---- 13. line breaks editors do not show ---------------------------------------------------------

@pytest.mark.parametrize("char, name", [("\u2028", "LINE SEPARATOR"), ("\u2029", "PARAGRAPH SEPARATOR"),
                                        ("\x85", "NEXT LINE")])
@pytest.mark.parametrize("where", ["comment", "description"])
def test_hidden_line_breaks_are_located_as_an_editor_counts(tmp_path, char, name, where):
    line2 = f"# a comment{char}with a break\n" if where == "comment" else f"description: one{char}two\n"
    (tmp_path / "toy.yaml").write_text(TOY.split("\n", 1)[0] + "\n" + line2 + TOY.split("\n", 1)[1]
                                       + "support: [{id: r, source: t}]\n", encoding="utf-8")
    with pytest.raises(YamlError) as caught:
        read_document(tmp_path / "toy.yaml")
    p = caught.value.problem
    column = line2.index(char) + 1
    assert (p.line, p.column) == (2, column) and f"U+{ord(char):04X} ({name})" in p.message


# ---- 18. CLI paths that ended in a traceback or a hang -------------------------------------------

def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "attncap.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=kw.get("cwd", ROOT))


@pytest.mark.parametrize("args", [["validate", "a" * 5000],
                                  ["resolve", "--arch", "sm90", "--head-dim", "64", "--data", "a/" * 2500]])
def test_a_5000_character_path(args):
    proc = cli(*args)
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr
    assert "File name too long" in proc.stderr + proc.stdout


def test_an_unwritable_or_missing_output_target():
    proc = cli("matrix", "--backend", "flash-attn-4", "--arch", "sm90", "--no-probes", "-o", "/nonexistent/x.md")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "attncap: /nonexistent/x.md: No such file or directory"


def test_data_empty_string_is_refused(tmp_path):
    (tmp_path / "toy.yaml").write_text("not: [valid\n", encoding="utf-8")  # would fail if the cwd were loaded
    proc = cli("resolve", "--arch", "sm90", "--head-dim", "64", "--data", "", cwd=tmp_path)
    assert proc.returncode == 2 and "an empty path is not a capability directory" in proc.stderr
    with pytest.raises(ValueError, match="empty path"):
        attncap.load_registry(("",))


@pytest.mark.parametrize("command", ["drift", "matrix"])
def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys, command):
    from attncap import cli as cli_module
    from attncap import drift
    from attncap.matrix import commands

    def interrupted(*args, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(drift, "run_drift", interrupted)
    monkeypatch.setattr(commands, "_render", interrupted)
    argv = ["drift", "--arch", "sm90"] if command == "drift" else ["matrix", "--backend", "flash-attn-4",
                                                                   "--arch", "sm90", "--no-probes"]
    assert cli_module.main(argv) == 130
    assert capsys.readouterr().err == "attncap: interrupted\n"


SIGINT_SCRIPT = """
import sys
from attncap import drift
from attncap.cli import main
real = drift.run_drift

def announced(*args, **kw):  # the signal must land inside the command, not before main() runs
    print("ready", flush=True)
    return real(*args, **kw)
drift.run_drift = announced
sys.exit(main(["drift", "--arch", "sm100", "--dtype", "bf16", "--head-dims", "1..2000"]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_during_drift():
    import signal
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
