"""The authors' released weights (`LianJC/DFF-InstructBLIP-Detection` + `LianJC/Face-ViT-MultiLabel`) as a
ForgeryTalker checkpoint: `convert_released_checkpoint`, or `forgerytalker convert-checkpoint` on the command line.

- `files`: reading the released pickles safely (`torch.load(weights_only=True)`) into plain tensor dicts;
- `key_mapping`: where every released key goes, and the explicit list of what is dropped and why;
- `sizes`: the ForgeryTalker config read from the tensors' shapes;
- `convert`: putting it together and writing the checkpoint.
"""

from .convert import DFF_GENERATION_SETTINGS, ConversionReport, convert_released_checkpoint
from .files import CheckpointConversionError

__all__ = ["DFF_GENERATION_SETTINGS", "CheckpointConversionError", "ConversionReport", "convert_released_checkpoint"]
