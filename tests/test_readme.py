"""The README's quick start and env table stay true to the code."""

from __future__ import annotations

from pathlib import Path

from edgehub.settings import describe_settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_documents_every_environment_variable_with_its_default() -> None:
    for name, default, _ in describe_settings():
        assert f"| `{name}` | {default} |" in README, name


def test_readme_quick_start_is_the_two_make_commands() -> None:
    assert "make run" in README
    assert "make test" in README
