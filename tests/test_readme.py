"""README.md stays true: its generated FA4 table is current and its test command is CI's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fa4_table_is_generated_from_the_current_data():
    proc = subprocess.run([sys.executable, str(ROOT / "tools/readme_fa4.py"), "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_readme_starts_with_install_and_test_commands_that_ci_runs():
    commands = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("pip install")]
    install_and_run, install_and_test = commands[:2]
    assert "attncap resolve" in install_and_run
    ci = (ROOT / ".ci/run").read_text()
    install, test = install_and_test.split(" && ")
    assert install.replace("pip install ", "pip install -q ") in ci
    assert test + " -q" in ci or test in ci


# The README's examples, run: their shown output is what they print.

README = (ROOT / "README.md").read_text()
# The environment the README's Python outputs come from: CI's test extras.
README_ENV = {"torch": "2.13.0", "flash-attn-4": "4.0.0b36", "flash-attn": None, "flash-attn-3": None,
              "transformer-engine": None}


def _blocks(language: str) -> list[str]:
    import re
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def _detected_is_the_readme_environment() -> bool:
    from packaging.version import Version
    from attncap import Environment
    env = Environment.detect()
    return all((env.version(p) is None) if v is None else
               (env.version(p) is not None and Version(env.version(p)).public == v) for p, v in README_ENV.items())


def test_readme_python_example_prints_what_it_shows():
    import doctest
    import pytest
    import attncap
    blocks = [b for b in _blocks("python") if b.startswith(">>> ")]
    assert blocks, "the README's Python example is a doctest"
    attncap.clear_cache()
    if not _detected_is_the_readme_environment():
        pytest.skip(f"the README's outputs are for the test extras ({README_ENV}); installed here: "
                    f"{attncap.Environment.detect()}")
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for i, block in enumerate(blocks):
        test = parser.get_doctest(block, {}, f"README.md python block {i}", "README.md", 0)
        result = runner.run(test, out=lambda text: pytest.fail(text, pytrace=False))
        assert result.failed == 0


def _console_examples():
    out = []
    for block in _blocks("console"):
        lines = block.splitlines()
        command = lines[0].removeprefix("$ ")
        i = 1
        while command.endswith("\\"):
            command, i = command[:-1] + " " + lines[i].strip(), i + 1
        out.append((command, "\n".join(lines[i:]) + "\n"))
    return out


def test_readme_console_examples_print_what_they_show(capsys):
    import doctest
    import shlex
    from attncap.cli import main
    examples = _console_examples()
    assert examples
    checker = doctest.OutputChecker()
    for command, shown in examples:
        argv = shlex.split(command)
        assert argv[0] == "attncap" and "--no-detect" in argv, f"{command}: must not depend on this machine"
        main(argv[1:])
        got = capsys.readouterr().out
        # a line "  ..." in the README stands for any lines
        assert checker.check_output(shown, got, doctest.ELLIPSIS), f"README shows:\n{shown}\nit prints:\n{got}"


def test_readme_first_command_runs():
    import shlex
    from attncap.cli import main
    command = next(line for line in README.splitlines() if line.startswith("pip install . && attncap"))
    argv = shlex.split(command.split(" && ", 1)[1])
    assert main([*argv[1:], "--no-detect"]) in (0, 1)  # as after `pip install .`: nothing else installed
