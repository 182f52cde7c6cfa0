"""The `forgerytalker` command line starts without torch, and `import forgerytalker` still registers the Auto classes."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import forgerytalker

HEAVY_MODULES = ("torch", "transformers", "datasets", "cv2", "accelerate")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def imported_heavy_modules(*argv: str) -> list[str]:
    """The heavy modules that `forgerytalker ARGV` imports, read from sys.modules after the command answered."""
    code = (
        "import sys\nfrom forgerytalker.cli import main\n"
        f"try:\n    main({list(argv)!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv", [("--help",), ("--version",), ("evaluate", "--help"), ("data", "--help"), ("data", "convert", "--help")]
)
def test_help_and_version_do_not_import_torch(argv):
    assert imported_heavy_modules(*argv) == []


def test_console_entry_answers_help_and_version():
    version = subprocess.run([sys.executable, "-m", "forgerytalker.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"forgerytalker {forgerytalker.__version__}"
    usage = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "forgerytalker.cli", "--help"], capture_output=True, text=True
    )
    assert usage.returncode == 0 and "evaluate" in usage.stdout and "--version" in usage.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in usage.stderr.splitlines() if line.startswith("import time:")}
    assert "forgerytalker.cli" in imported and not imported & set(HEAVY_MODULES)


@pytest.mark.parametrize(
    "order",
    [
        "import forgerytalker\nfrom transformers import AutoConfig, AutoModel, AutoProcessor",
        "from transformers import AutoConfig, AutoModel, AutoProcessor\nimport forgerytalker",
        "import forgerytalker\nfrom transformers import PreTrainedModel\nfrom transformers import AutoConfig, AutoModel, AutoProcessor",
    ],
)
def test_importing_the_package_registers_the_auto_classes_in_either_order(order):
    code = (
        f"{order}\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
        "assert 'forgerytalker' in CONFIG_MAPPING\n"
        "config_class = CONFIG_MAPPING['forgerytalker']\n"
        "assert config_class.__name__ == 'ForgeryTalkerConfig'\n"
        "assert AutoModel._model_mapping[config_class].__name__ == 'ForgeryTalkerForConditionalGeneration'\n"
        "prompter_type = forgerytalker.ForgeryTalkerPrompterConfig.model_type\n"
        "assert AutoModel._model_mapping[CONFIG_MAPPING[prompter_type]].__name__ == 'ForgeryTalkerPrompterNetwork'\n"
        "import sys\nassert not any(type(f).__name__ == '_Finder' for f in sys.meta_path)\n"
        "print('ok')"
    )
    result = run_python(code)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_public_names_load_on_first_use():
    result = run_python(
        "import sys, forgerytalker\nassert 'torch' not in sys.modules\n"
        "from forgerytalker import REGION_NAMES, ForgeryTalkerProcessor\n"
        "assert len(REGION_NAMES) == 21 and ForgeryTalkerProcessor.__name__ == 'ForgeryTalkerProcessor'\n"
        "assert set(forgerytalker.__all__) <= set(dir(forgerytalker))\nprint('ok')"
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
