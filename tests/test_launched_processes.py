"""The process group of a launched command is destroyed when the command ends, however it ends: left to the
interpreter's shutdown, gloo's threads can abort a process whose work is done (the launcher then fails the run)."""

import os
import re
import subprocess
import sys
import textwrap

import pytest
from launching import launch_processes

from forgerytalker.launched_processes import WORLD_SIZE_VARIABLES

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch.distributed as dist
    from accelerate.utils import gather_object
    from forgerytalker.launched_processes import launched_processes
    from forgerytalker.process_exit import exit_without_teardown

    fail = sys.argv[1] == "fail"
    try:
        with launched_processes() as state:
            gathered = gather_object([state.process_index])
            assert dist.is_initialized() and gathered == [0, 1], gathered
            if fail:
                raise RuntimeError("the command failed")
    except RuntimeError:
        pass
    print(f"process {state.process_index} of {state.num_processes}: group left initialized: {dist.is_initialized()}")
    # as the commands end (`forgerytalker.process_exit`): even with the group destroyed, the interpreter's teardown
    # once aborted a finished two-process evaluate in CI
    exit_without_teardown(0)
    """
)


def test_one_process_sets_nothing_up_and_imports_no_accelerate():
    """A third of a second of every one-process `analyze --faces whole` start-up went to importing accelerate."""
    code = ("import sys; from forgerytalker.launched_processes import launched_processes\n"
            "with launched_processes() as state:\n    print(state, 'accelerate' in sys.modules)")
    environment = {name: value for name, value in os.environ.items() if name not in WORLD_SIZE_VARIABLES}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)
    assert result.stdout.split() == ["None", "False"], result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["succeed", "fail"])
def test_two_launched_processes_end_with_their_group_destroyed(tmp_path, outcome):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    result = launch_processes([str(script), outcome], tmp_path / "scratch", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # the two processes share one stdout: their lines may interleave
    lines = sorted(re.findall(r"process \d of 2: group left initialized: (?:True|False)", result.stdout))
    assert lines == [f"process {index} of 2: group left initialized: False" for index in range(2)], result.stdout
