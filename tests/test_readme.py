"""The README's promises: its test command is the one CI runs."""
from __future__ import annotations

import re
from pathlib import Path


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    test_line = next(line for block in _bash_blocks(readme) for line in block.splitlines() if "pytest" in line)
    readme_command = test_line.split("&&")[-1].strip()
    ci_lines = [line.strip() for line in (repo_root / ".ci" / "run").read_text().splitlines()]
    assert readme_command in ci_lines, f"{readme_command!r} is not a line of .ci/run"
