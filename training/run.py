"""Train ForgeryTalker, either stage, on one process or many:

    accelerate launch training/run.py --config training/configs/prompter.yaml --dataset DATA --output_dir OUT
    accelerate launch training/run.py --config training/configs/joint.yaml --dataset DATA \
        --model_name_or_path STAGE1_OUT --output_dir OUT2

Any setting of the YAML file can be overridden with a flag of the same name (`--learning_rate 1e-4`);
`--resume` continues a killed run from its last checkpoint.
"""

import logging

from forgerytalker.training.arguments import parse_arguments
from forgerytalker.training.trainer import train

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(parse_arguments())
