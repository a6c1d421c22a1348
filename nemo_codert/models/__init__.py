"""CoDERT models. Importing this package lets NeMo restore CoDERT `.nemo` files, and nothing more."""

from nemo.core.classes import common as _nemo_common

# NeMo 3.0 instantiates a `.nemo`'s `target` only under approved module prefixes. Ours is added, exactly and only
# it, so `CodertRNNTBPEModel.restore_from` works while every other foreign target stays refused.
_PREFIX = "nemo_codert."
if _PREFIX not in _nemo_common.ALLOWED_TARGET_PREFIXES:
    _nemo_common.ALLOWED_TARGET_PREFIXES.append(_PREFIX)

from nemo_codert.models.codert import CodertRNNTBPEModel  # noqa: E402
from nemo_codert.models.loading import (  # noqa: E402
    load_codert,
    load_stock_transducer,
    load_transducer,
    side_transcriber,
)
from nemo_codert.models.side import TransducerSide  # noqa: E402

__all__ = [
    "CodertRNNTBPEModel",
    "TransducerSide",
    "load_codert",
    "load_stock_transducer",
    "load_transducer",
    "side_transcriber",
]
