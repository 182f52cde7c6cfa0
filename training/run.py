"""Train ForgeryTalker, either stage, on one process or many:

    accelerate launch training/run.py --config training/configs/prompter.yaml --dataset DATA \
        --instructblip_name_or_path INSTRUCTBLIP --output_dir STAGE1_OUT
    accelerate launch training/run.py --config training/configs/joint.yaml --dataset DATA \
        --instructblip_name_or_path INSTRUCTBLIP --prompter_name_or_path STAGE1_OUT --output_dir OUT2

Any setting of the YAML file can be overridden with a flag of the same name (`--learning_rate 1e-4`);
`--resume` continues a killed run from its last complete checkpoint. A bad setting, input or missing tool
is reported with the flag it concerns and exit code 2, before any model is built.
"""

import logging
import sys

from forgerytalker.process_exit import exit_without_teardown
from forgerytalker.training.arguments import parse_arguments
from forgerytalker.training.errors import TrainingConfigurationError, UnreadableSampleError
from forgerytalker.training.trainer import train


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_arguments(argv)
    try:
        train(args)
    except (TrainingConfigurationError, UnreadableSampleError) as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # a finished run ends as `forgerytalker evaluate` does, without the interpreter's teardown, where gloo's threads
    # could still abort a launched process whose checkpoints are written (`forgerytalker.process_exit`)
    exit_without_teardown(main())
