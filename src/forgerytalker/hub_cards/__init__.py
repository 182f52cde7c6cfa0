"""Hub cards: the README.md model card of a checkpoint and the dataset card of a converted dataset.

`forgerytalker push` writes the model card; `forgerytalker data convert` writes the dataset card, which
`forgerytalker push --dataset` uploads with the data.
"""

from .dataset_card import CardFacts, write_dataset_card
from .model_card import ModelCardFacts, read_facts_from_folder, write_model_card

__all__ = ["CardFacts", "ModelCardFacts", "read_facts_from_folder", "write_dataset_card", "write_model_card"]
